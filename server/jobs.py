"""The job service: the store's shared queue feeding this replica's engine worker (the engine is not re-entrant).

Jobs live in the store (``server.store``): the API inserts them, the worker claims the oldest
one of its model under a lease that a heartbeat thread renews, and any replica's DELETE removes
the record, which the running worker notices within a step. With SQLite there is one replica;
with PostgreSQL every replica of the service shares the queue, and one that dies has its jobs
re-queued by the others when their leases expire.
"""

from __future__ import annotations

import functools
import json
import math
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.folder_model import FolderModel

from server.engine import Engine, EngineLoader, load_engine
from server.store import Job, JobStore, now, redacted, store_url

log = logging.getLogger("sgld.server")


class QueueFull(Exception):
    """The bounded queue has no room for a new job."""


class JobCancelled(Exception):
    """Raised inside the denoise loop when the running job was deleted (on any replica)."""


class JobReleased(Exception):
    """Raised inside the denoise loop when a draining replica gives its running job back to the queue."""


def engine_options(options: dict) -> dict:
    """A job's options as the engine takes them: its outputs (``n``, format) and adapters are set per batch."""
    return {k: v for k, v in options.items() if k not in ("n", "output_format", "loras")}


def new_id(kind: str) -> str:
    """An unguessable job id: ``video_<32 hex>`` / ``image_<32 hex>``."""
    return f"{kind}_{secrets.token_hex(16)}"


class JobService:
    """Owns the store, the engine and the worker and heartbeat threads of one replica.

    ``engine`` is a loaded engine, or None to load one from ``run`` with ``load`` in the
    background (``/health`` reports ``loading`` until it is ready).
    """

    # How often an idle worker looks at the shared queue for jobs other replicas accepted.
    POLL_S = 0.2

    def __init__(self, run: RunConfig, engine: Optional[Engine] = None, metrics: Any = None,
                 load: EngineLoader = load_engine):
        self.run = run
        self.load = load
        self.output_dir = Path(run.output.path).expanduser().resolve()
        self.files_dir = self.output_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(store_url(run.server.job_store, self.output_dir))
        log.info("job store: %s", redacted(self.store.url))
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.started_at = time.time()
        self.metrics = metrics
        self.engine: Optional[Engine] = engine
        self.load_error: Optional[str] = None
        self.ready = threading.Event()
        self._done: dict[str, threading.Event] = {}
        self._done_lock = threading.Lock()
        self._cancel: set[str] = set()
        self._running: set[str] = set()
        self._release = threading.Event()  # draining: give the running job back to the queue
        self._wake = threading.Condition()  # a job was submitted here: look at the queue now
        self._keys: dict[str, Optional[tuple]] = {}  # job id -> its batch key (None: runs alone)
        # Held while the engine runs a job or a control action (LoRA endpoints): the engine is not re-entrant.
        self.engine_lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._worker = threading.Thread(target=self._work, name="sgld-engine-worker", daemon=True)
        self._heart = threading.Thread(target=self._beat, name="sgld-heartbeat", daemon=True)
        self._recover()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Register this replica, then start the worker (it loads the engine first when none was given)."""
        self.store.register(self.replica_id, self.model_id, f"{self.run.server.host}:{self.run.server.port}")
        self._heart.start()
        self._worker.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the worker to stop after the current job; leave the replica registry (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout)
        if self.engine is not None:  # a multi-rank engine's ranks exit here
            self.engine.stop()
        try:
            self.store.unregister(self.replica_id)
        except Exception as exc:  # noqa: BLE001 - the store may be down; the registry entry then just ages out
            log.warning("could not leave the replica registry: %s", exc)

    def drain(self, timeout: float) -> None:
        """Stop claiming jobs; let the running one finish within ``timeout`` seconds, else give it back to the queue."""
        self._draining.set()
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._running:
            log.info("draining: giving %d running job(s) back to the queue", len(self._running))
            self._release.set()
            while self._running and time.monotonic() < deadline + 30:
                time.sleep(0.1)
        self.stop()

    def _recover(self) -> None:
        """Re-queue jobs whose worker is gone: with SQLite (one replica) every job left running by an earlier
        process; with a shared store those whose leases expired (the others are still someone's)."""
        server = self.run.server
        requeued, failed = self.store.reclaim(server.max_attempts, every_running=not self.store.shared)
        for job_id in requeued:
            log.info("job %s was interrupted (its server stopped); running it again", job_id)
        for job_id in failed:
            log.warning("job %s failed: its server was lost %d times", job_id, server.max_attempts)

    def _load_engine(self) -> None:
        start = time.perf_counter()
        try:
            self.engine = self.load(self.run, self._engine_failed)
        except Exception as exc:  # noqa: BLE001 - reported on /health, the server keeps answering
            log.exception("model failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        log.info("model %s ready in %.1f s", self.run.model.name, time.perf_counter() - start)
        self.ready.set()

    def _engine_failed(self, message: str) -> None:
        """A multi-rank engine's group ended: say so on /health; queued jobs fail with the reason."""
        self.load_error = f"the model's rank group failed: {message}"
        self.ready.clear()

    def _beat(self) -> None:
        """Heartbeat: renew this replica's registration and its running jobs' leases; re-queue lost jobs."""
        server = self.run.server
        interval = max(0.2, min(server.lease_s / 3, 5.0))
        while not self._stop.wait(interval):
            try:
                self.store.heartbeat(self.replica_id, draining=self._draining.is_set())
                self.store.renew(self.replica_id, list(self._running), server.lease_s)
                requeued, failed = self.store.reclaim(server.max_attempts)
                if server.retention_s is not None:
                    self._sweep()
                if self.metrics is not None:
                    self.metrics.leases_expired.inc(len(requeued) + len(failed))
                    self.metrics.requeued.inc(len(requeued))
                for job_id in requeued:
                    log.warning("job %s: its server stopped answering (lease expired); re-queued", job_id)
                for job_id in failed:
                    log.warning("job %s: its server was lost %d times; failed", job_id, server.max_attempts)
                if requeued:
                    with self._wake:
                        self._wake.notify_all()
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while; /health says so
                log.warning("heartbeat: the job store is unreachable: %s", exc)

    def _sweep(self) -> None:
        """Remove the files of completed jobs past their ``expires_at`` (each job by one replica only)."""
        for job in self.store.expire_due():
            self._remove_files(job)
            log.info("job %s expired (server.retention_s=%g): its files are removed", job.id, self.run.server.retention_s)

    def output_bytes(self) -> int:
        """Bytes of output files kept in the files directory."""
        return sum(path.stat().st_size for path in self.files_dir.iterdir() if path.is_file())

    # -- submitting ------------------------------------------------------------------------------

    def queued(self) -> int:
        """Jobs of this model waiting in the (shared) queue."""
        return self.store.queued(self.model_id)

    @property
    def draining(self) -> bool:
        """Whether this replica is stopping (it claims no more jobs)."""
        return self._draining.is_set()

    def served_models(self) -> list[str]:
        """The models live replicas of the service serve (this one's included)."""
        return sorted({r["model"] for r in self.store.live_replicas(self.run.server.lease_s) if not r["draining"]}
                      | {self.model_id})

    def submit(self, kind: str, prompt: str, options: dict, size: str, seconds: Optional[str], job_id: Optional[str] = None,
               request_id: Optional[str] = None, run: Optional[RunConfig] = None) -> Job:
        """Persist a validated job in the shared queue; QueueFull when the queue is at its bound.

        ``request_id``: the creating request's x-request-id, named by the job's error and log lines.
        ``run``: the request's RunConfig as the engine checked it: its batch key is recorded with the job.
        """
        job = Job(
            id=job_id or new_id(kind),
            kind=kind,
            status="queued",
            model=self.model_id,
            prompt=prompt,
            options=options,
            size=size,
            seconds=seconds,
            created_at=now(),
            request_id=request_id,
        )
        if run is not None:
            key = self._key_of(job, run)
            self._keys[job.id] = key
            job.batch_key = None if key is None else json.dumps(key)
        if self.queued() >= self.run.server.max_queue:
            self._keys.pop(job.id, None)
            raise QueueFull
        with self._done_lock:
            self._done[job.id] = threading.Event()
        self.store.insert(job)
        with self._wake:
            self._wake.notify_all()
        return job

    def wait(self, job_id: str, timeout: float) -> Optional[Job]:
        """Block until the job ends (or ``timeout``); the job's record then. A job another replica runs is polled."""
        with self._done_lock:
            event = self._done.get(job_id)
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job is None or job.status not in ("queued", "in_progress") or time.monotonic() >= deadline:
                return job
            if event is not None:
                event.wait(min(self.POLL_S * 5, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(min(self.POLL_S, max(0.0, deadline - time.monotonic())))

    def delete(self, job_id: str) -> bool:
        """Cancel a queued or running job (here or on another replica) and remove its record and files."""
        job = self.store.get(job_id)
        if job is None:
            return False
        if job_id in self._running:
            self._cancel.add(job_id)
        self.store.delete(job_id)
        self._keys.pop(job_id, None)
        self._remove_files(job)
        self._finish(job_id)
        return True

    def control(self, action: Callable[[Engine], Any]) -> Any:
        """Run ``action`` on the loaded engine between jobs (it waits for the running one)."""
        with self.engine_lock:
            return action(self.engine)

    @functools.cached_property
    def folder_model(self) -> FolderModel:
        """The served model as its folder describes it (kind, needs an image), known before it loads."""
        return FolderModel.of(self.run.model.path, self.run.model.download)

    @property
    def model_id(self) -> str:
        """The loaded model's id (what ``--model-path`` named)."""
        return self.run.model.path

    # -- the worker ------------------------------------------------------------------------------

    def _next(self) -> Optional[Job]:
        """Claim the oldest queued job of this model, waiting up to ``POLL_S`` for one."""
        job = self.store.claim(self.model_id, self.replica_id, self.run.server.lease_s)
        if job is None:
            with self._wake:
                self._wake.wait(self.POLL_S)
        return job

    def _work(self) -> None:
        if self.engine is None:
            self._load_engine()
        else:
            self.ready.set()
        while not self._stop.is_set() and not self._draining.is_set():
            try:
                job = self._next()
            except Exception as exc:  # noqa: BLE001 - the store is down: wait for it (/health says so)
                log.warning("worker: the job store is unreachable: %s", exc)
                self._stop.wait(1.0)
                continue
            if job is None:
                continue
            if self.metrics is not None:
                self.metrics.claimed.inc()
            if self.engine is None:
                self._fail(job, "model_unavailable", f"the model failed to load: {self.load_error}")
                self._finish(job.id)
                continue
            jobs = [job]
            try:
                jobs = self._gather(job)
                self._run(jobs)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job's bookkeeping error
                for job in jobs:
                    log.exception("job %s (request_id=%s): unexpected error outside generation", job.id, job.request_id)
                    self._fail(job, "internal_error", "the server hit an unexpected error while finishing this job")
                    self._running.discard(job.id)
                    self._finish(job.id)

    # -- batching --------------------------------------------------------------------------------

    def batch_limit(self) -> int:
        """Most samples one forward may hold: the server's setting, within what the engine can batch."""
        return max(1, min(self.run.server.max_batch_size, self.engine.batch_limit()))

    @staticmethod
    def samples(job: Job) -> int:
        """How many outputs (samples in a batch) a job makes."""
        return int(job.options.get("n", 1)) if job.kind == "image" else 1

    def _batch_key(self, job: Job) -> Optional[tuple]:
        """What the job must share with others to run in their batch; None: it runs alone.

        Kept from submission (in the store, for jobs another replica accepted); a job without one
        (accepted before batching existed, or whose check failed) runs alone.
        """
        if job.id not in self._keys:
            self._keys[job.id] = None if job.batch_key is None else tuple(json.loads(job.batch_key))
        return self._keys[job.id]

    def _key_of(self, job: Job, run: RunConfig) -> Optional[tuple]:
        """The batch key of ``job`` checked as ``run``. Too large a sample (``server.batch_max_pixels``) or an
        edit whose size follows its input image runs alone; adapters are part of the key (one set per forward).
        """
        from sgld.request import Request

        s = run.sampling
        if s.height is None or s.width is None:
            return None
        frames = s.num_frames if self.engine.pipeline.spec.output == "video" else 1
        if s.width * s.height * frames > self.run.server.batch_max_pixels:
            return None
        loras = json.dumps(job.options.get("loras"), sort_keys=True)
        return (self.engine.pipeline.spec.batch_key(Request.from_sampling(s)), loras)

    def _gather(self, job: Job) -> list[Job]:
        """``job`` and queued jobs that can share its forward (same batch key), claimed while ``batch_wait_ms`` lasts."""
        limit = self.batch_limit()
        count = self.samples(job)
        if limit <= 1 or count >= limit or job.batch_key is None:
            return [job]
        self._running.add(job.id)  # its lease is renewed while the batch fills
        jobs = [job]
        start = time.perf_counter()
        deadline = start + self.run.server.batch_wait_ms / 1000
        while count < limit:
            other = self.store.claim(self.model_id, self.replica_id, self.run.server.lease_s, batch_key=job.batch_key)
            if other is not None:
                if count + self.samples(other) > limit:  # too many images for this batch: it waits for the next
                    self.store.release(other.id, self.replica_id)
                    break
                jobs.append(other)
                count += self.samples(other)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            with self._wake:
                self._wake.wait(min(remaining, 0.02))
        if self.metrics is not None:
            self.metrics.batch_wait.observe(time.perf_counter() - start)
        return jobs

    # -- running ---------------------------------------------------------------------------------

    def _run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` (one batch key) through the engine together; each ends on its own outcome."""
        started = time.perf_counter()
        items, owners = [], []
        for job in jobs:
            self._running.add(job.id)  # claimed: in_progress under this replica's lease
            for item in self._items(job, self._progress(job)):
                items.append(item)
                owners.append(job.id)
        limit = self.batch_limit()
        try:
            with self.engine_lock:
                outcomes = self.engine.generate_batch(items, loras=jobs[0].options.get("loras"), max_batch_size=limit)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            outcomes = [exc] * len(items)
        if self.metrics is not None:
            for first in range(0, len(items), limit):
                self.metrics.batch_size.observe(min(limit, len(items) - first))
        for job in jobs:
            mine = [(item.options["output_file_name"], outcome)
                    for owner, item, outcome in zip(owners, items, outcomes) if owner == job.id]
            try:
                status = self._settle(job, mine)
            finally:
                self._running.discard(job.id)
                self._cancel.discard(job.id)
                self._keys.pop(job.id, None)
                self._finish(job.id)
            if "image_path" in job.options:  # an edit's uploads: needed until its job ends (a restart re-runs it)
                for upload in self.files_dir.glob(f"{job.id}_input*.png"):
                    try:
                        upload.unlink(missing_ok=True)
                    except OSError as exc:
                        log.warning("job %s: could not remove its input image: %s", job.id, exc)
            if self.metrics is not None:
                self.metrics.job_seconds.labels(kind=job.kind, status=status).observe(time.perf_counter() - started)

    def _progress(self, job: Job) -> Callable[[int, int], None]:
        """The job's step callback: progress in the store, its cancel signal (the job's samples leave the batch).

        A DELETE on another replica removes the record: the check after every step sees it.
        """
        last = [-1]

        def on_step(done: int, total: int) -> None:
            if job.id in self._cancel or (done > 0 and not self.store.exists(job.id)):
                raise JobCancelled
            if self._release.is_set():
                raise JobReleased
            # 0..99 while denoising; 100 only once the file is saved.
            percent = min(99, done * 100 // total)
            if percent != last[0]:
                last[0] = percent
                self.store.update(job.id, progress=percent)
            if self.metrics is not None and done > 0:  # done == 0 marks the loop's start
                self.metrics.steps.inc()

        return on_step

    def _items(self, job: Job, on_step: Callable[[int, int], None]) -> list:
        """The job's outputs as batch items: a video, or ``n`` images with seeds seed, seed+1, ..."""
        from sgld.api import BatchItem

        options = engine_options(job.options)
        common = {"save_output": True, "output_path": str(self.files_dir)}
        if job.kind == "video":
            return [BatchItem({**options, **common, "return_frames": True, "output_file_name": f"{job.id}.mp4"}, on_step)]
        fmt = job.options.get("output_format", "png")
        seed = int(options.pop("seed", self.run.sampling.seed))
        return [BatchItem({**options, **common, "seed": seed + i, "output_file_name": f"{job.id}_{i}.{fmt}"}, on_step)
                for i in range(self.samples(job))]

    def _settle(self, job: Job, outcomes: list[tuple[str, Any]]) -> str:
        """Record how the job ended from its samples' (file name, outcome) (the first error wins); its final status."""
        error = next((o for _, o in outcomes if isinstance(o, BaseException)), None)
        if isinstance(error, JobReleased):
            log.info("job %s given back to the queue (this replica is draining)", job.id)
            self.store.release(job.id, self.replica_id)
            self._remove_files(job)
            return "released"
        if isinstance(error, JobCancelled):
            log.info("job %s cancelled (request_id=%s)", job.id, job.request_id)
            self._remove_files(job)
            return "cancelled"
        if isinstance(error, UserError):
            self._fail(job, "invalid_request", str(error))
            return "failed"
        if isinstance(error, OSError):  # the output directory is full, read-only or gone
            log.error("job %s (request_id=%s): could not write its output: %s", job.id, job.request_id, error)
            self._fail(job, "output_write_failed", f"could not write the output file in {self.files_dir}: {error}")
            self._remove_files(job)
            return "failed"
        if error is not None:
            log.error("job %s failed (request_id=%s)", job.id, job.request_id, exc_info=error)
            self._fail(job, "generation_failed", f"{type(error).__name__}: {error}")
            self._remove_files(job)
            return "failed"
        if self.store.get(job.id) is None:  # deleted while saving
            self._remove_files(job)
            return "cancelled"
        names = [name for name, _ in outcomes]
        if job.kind == "video":
            thumb = self.files_dir / f"{job.id}_thumbnail.webp"
            _save_thumbnail(outcomes[0][1].frames[0], thumb)
            names.append(thumb.name)
        retention = self.run.server.retention_s
        finished = now()
        self.store.update(job.id, status="completed", progress=100, completed_at=finished, outputs=names,
                          expires_at=None if retention is None else finished + int(math.ceil(retention)))
        return "completed"

    def _fail(self, job: Job, code: str, message: str) -> None:
        if job.request_id:
            message = f"{message} (request_id={job.request_id})"
        if self.store.get(job.id) is not None:
            self.store.update(job.id, status="failed", completed_at=now(), error_code=code, error_message=message)

    def _finish(self, job_id: str) -> None:
        with self._done_lock:
            event = self._done.pop(job_id, None)
        if event is not None:
            event.set()

    def _remove_files(self, job: Job) -> None:
        for path in self.files_dir.glob(f"{job.id}*"):
            if path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def file_path(self, job: Job, name: str) -> Path:
        """A job's output file, guaranteed to be inside the files directory."""
        path = (self.files_dir / name).resolve()
        if path.parent != self.files_dir:
            raise FileNotFoundError(name)
        return path


def _save_thumbnail(frame, path: Path) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path, format="WEBP")
