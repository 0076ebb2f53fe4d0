"""The per-request performance log: one JSON line per finished job, in SGLang's ``performance.log`` format.

Each line is SGLang's ``RequestPerfRecord``: the job id as ``request_id`` (the id the API answered with),
``stages`` (each pipeline stage's milliseconds; ``is_denoising`` for the denoise loop), ``steps`` (each denoise
step's milliseconds, from the step callback), ``total_duration_ms`` (the job's batch, from the worker taking it
to its outputs being saved) and ``memory_snapshots`` (the GPU peak where it is known).
SGLang's tools and test harness read it; so can anyone comparing runs.

On with ``--perf-log-dir DIR`` (``server.perf_log_dir``), or as SGLang turns it on:
``SGLANG_DIFFUSION_STAGE_LOGGING=1``, into ``$SGLANG_PERF_LOG_DIR`` (else ``<output path>/logs``). A record is
appended once a job's outputs are made, before it is marked completed, so a client that sees the job done finds
its line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

from sgld.config.schema import RunConfig

log = logging.getLogger("sgld.server")

FILE_NAME = "performance.log"
DENOISE_STAGE = "denoise"


def perf_log_dir(run: RunConfig, env: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Where this server writes performance.log, or None when the log is off."""
    if run.server.perf_log_dir:
        return Path(run.server.perf_log_dir).expanduser()
    if str(env.get("SGLANG_DIFFUSION_STAGE_LOGGING", "")).strip().lower() in ("1", "true", "yes", "on"):
        return Path(env.get("SGLANG_PERF_LOG_DIR") or Path(run.output.path) / "logs").expanduser()
    return None


class PerfLog:
    """Times each job's denoise steps and appends its record when it completes (thread-safe)."""

    def __init__(self, folder: Optional[Path]):
        self.path = None if folder is None else folder / FILE_NAME
        self._steps: dict[str, list[float]] = {}  # job id -> the clock at the loop's start and after each step
        self._lock = threading.Lock()
        if self.path is not None:
            log.info("performance log: %s (one line per completed job)", self.path)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def step(self, job_id: str, done: int) -> None:
        """A job's step callback reached ``done`` steps (0: its denoise loop starts). Samples of one job report
        the same step; each step is timed once."""
        if self.path is None:
            return
        now = time.perf_counter()
        with self._lock:
            marks = self._steps.setdefault(job_id, [])
            if done == 0:
                if not marks:
                    marks.append(now)
            elif len(marks) == done:  # the first sample to reach this step
                marks.append(now)

    def forget(self, job_id: str) -> None:
        """Drop a job's step times (it did not complete)."""
        with self._lock:
            self._steps.pop(job_id, None)

    def record(self, job_id: str, timings: Mapping[str, float], total_s: float, peak_mb: Optional[float] = None) -> None:
        """Append the record of a job whose outputs were made; ``timings``: seconds per stage, ``peak_mb``: the GPU
        memory peak where known. A write error is logged, never raised: the job itself succeeded."""
        with self._lock:
            marks = self._steps.pop(job_id, [])
        if self.path is None:
            return
        steps = [round((b - a) * 1000, 3) for a, b in zip(marks, marks[1:])]
        record = {
            "request_id": job_id,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "commit_hash": _version(),
            "tag": "pipeline_stage_metrics",
            "stages": [{"name": name, "execution_time_ms": round(seconds * 1000, 3),
                        "is_denoising": name == DENOISE_STAGE} for name, seconds in timings.items()],
            "steps": steps,
            "total_duration_ms": round(total_s * 1000, 3),
            "memory_snapshots": {} if peak_mb is None else {"runtime_peak": {
                "peak_allocated_mb": peak_mb, "peak_reserved_mb": peak_mb}},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("could not write the performance log %s: %s", self.path, exc)


def _version() -> str:
    from sgld import __version__

    return f"sgld-{__version__}"


def stage_timings(outcome: Any) -> dict[str, float]:
    """Seconds per stage of one output (a GenerationResult, or a rank group's result), {} when unknown."""
    timings = getattr(outcome, "timings", None) or {}
    return {name: float(seconds) for name, seconds in timings.items() if name != "load"}


def write_benchmark_report(path: str | Path, request_id: str, timings: Mapping[str, float], total_s: float) -> Path:
    """``generate --perf-dump-path``: SGLang's benchmark report of one generation as JSON (its stages' milliseconds
    as ``steps``; ``denoise_steps_ms`` stays empty: generate does not time single steps), written atomically."""
    report = {
        "timestamp": datetime.now(timezone.utc).isoformat(), "request_id": request_id, "commit_hash": _version(),
        "tag": "benchmark_dump", "total_duration_ms": round(total_s * 1000, 3),
        "steps": [{"name": name, "duration_ms": round(seconds * 1000, 3)} for name, seconds in timings.items()],
        "denoise_steps_ms": [], "memory_checkpoints": {}, "meta": {},
    }
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(report, indent=2))
    os.replace(partial, target)
    return target
