"""Fault injection for tests: engines and rank bodies that fail on purpose, handed to the real entry points.

Production code has no test switches: these wrap the real engine (or rank body) and are passed in
through ``create_app(load=...)``, ``RankGroupEngine(load=...)`` and ``launch(run, body)``. They are
module-level so spawned ranks can import them by name.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from sgld.config.schema import RunConfig

# A prompt containing JOB_FAULT fails its job inside the worker; RANK_FAULT makes a rank other than 0 die mid-job.
JOB_FAULT = "[[sgld-test-fault]]"
RANK_FAULT = "[[sgld-test-rank-fault]]"


def fail_on_rank_one(run: RunConfig, state: Any):
    """A rank body (for ``launch``) whose rank 1 dies before generating; rank 0 runs the real body."""
    from sgld.runner import run_local

    if state.rank == 1:
        raise RuntimeError(f"injected test failure on rank {state.rank}")
    return run_local(run, state)


class FaultyEngine:
    """An engine that fails a job whose prompt holds ``marker`` (when ``fails()``); everything else is ``inner``'s."""

    def __init__(self, inner: Any, marker: str, message: str = "injected test fault",
                 fails: Callable[[], bool] = lambda: True):
        self.inner, self.marker, self.message, self.fails = inner, marker, message, fails
        self.run = inner.run

    @property
    def pipeline(self):
        return self.inner.pipeline

    def check(self, **options: Any) -> RunConfig:
        return self.inner.check(**options)

    def generate(self, step_callback: Optional[Callable[[int, int], None]] = None, **options: Any) -> Any:
        if self.marker in str(options.get("prompt", "")) and self.fails():
            raise RuntimeError(self.message)
        return self.inner.generate(step_callback=step_callback, **options)

    def generate_batch(self, items: list, **kwargs: Any) -> list:
        # A fault is an engine error: it fails every item of the batch it is in.
        if any(self.marker in str(item.options.get("prompt", "")) for item in items) and self.fails():
            raise RuntimeError(self.message)
        return self.inner.generate_batch(items, **kwargs)

    def batch_limit(self) -> int:
        return self.inner.batch_limit()

    def stop(self) -> None:
        self.inner.stop()

    def loaded_loras(self) -> list[str]:
        return self.inner.loaded_loras()

    def lora_control(self, action: str, **kwargs: Any) -> Any:
        return self.inner.lora_control(action, **kwargs)


def load_rank_with_fault(run: RunConfig, state: Any) -> FaultyEngine:
    """A rank's generator (for RankGroupEngine) whose ranks other than 0 die on a RANK_FAULT prompt."""
    from sgld.api import DiffGenerator

    return FaultyEngine(DiffGenerator.from_run_config(run, state), RANK_FAULT,
                        f"injected test failure on rank {state.rank}", lambda: not state.is_main)


def load_engine_with_faults(run: RunConfig, on_failure: Callable[[str], None]) -> FaultyEngine:
    """The server's engine (one process or a rank group) with JOB_FAULT prompts failing their jobs."""
    from sgld.api import DiffGenerator
    from server.rank_group import RankGroupEngine

    if run.parallel.num_gpus > 1:
        engine = RankGroupEngine(run, on_failure, load=load_rank_with_fault)
        engine.start()
    else:
        engine = DiffGenerator.from_run_config(run)
    return FaultyEngine(engine, JOB_FAULT)
