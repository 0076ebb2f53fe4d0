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
import logging
import math
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import sqlalchemy.exc

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.folder_model import FolderModel

from server.engine import Engine, EngineLoader, load_engine, within_batch_pixels
from server.outputs import OutputFiles
from server.store import Job, JobStore, now, redacted, store_url
from server.warmup import warm_up

log = logging.getLogger("sgld.server")


class QueueFull(Exception):
    """The bounded queue has no room for a new job."""


class JobCancelled(Exception):
    """Raised inside the denoise loop when the running job was deleted (on any replica)."""


class JobReleased(Exception):
    """Raised inside the denoise loop when a draining replica gives its running job back to the queue."""


class EngineWorker:
    """One engine of the replica and the thread that feeds it (``--dp-size`` gives several)."""

    def __init__(self, index: int, worker_id: str, run: RunConfig, engine: Optional[Engine] = None):
        self.index = index
        self.id = worker_id  # the store's ``worker`` of the jobs it runs
        self.run = run  # its share of the GPUs (parallel.first_gpu) as one engine's run
        self.engine = engine
        self.failure: Optional[str] = None  # why its engine failed to load or died
        self.lock = threading.Lock()  # held while the engine runs a batch or a control action
        self.thread: Optional[threading.Thread] = None

    @property
    def alive(self) -> bool:
        """Whether it can run jobs."""
        return self.engine is not None and self.failure is None


def worker_run(run: RunConfig, index: int) -> RunConfig:
    """Data-parallel worker ``index``'s run: its ``num_gpus / dp_size`` GPUs, starting at ``index`` times that."""
    import copy

    par = run.parallel
    if par.dp_size == 1:
        return run
    own = copy.deepcopy(run)
    group = par.num_gpus // par.dp_size
    own.parallel.num_gpus, own.parallel.dp_size, own.parallel.first_gpu = group, 1, par.first_gpu + index * group
    if group == 1 and run.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            own.device = f"cuda:{own.parallel.first_gpu}"
    return own


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
        from sgld.model_builders.tiny import sgld_home

        self.outputs = OutputFiles(run.output.path, sgld_home())
        self.files_dir = self.outputs.local  # where the engine writes (the files' home unless outputs are remote)
        # SQLite lives beside local outputs; with remote outputs, in this host's staging space (one replica).
        self.output_dir = self.files_dir.parent
        self.store = JobStore(store_url(run.server.job_store, self.output_dir))
        log.info("job store: %s", redacted(self.store.url))
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.started_at = time.time()
        self.metrics = metrics
        dp = run.parallel.dp_size
        if engine is not None and dp != 1:
            raise ValueError("a JobService given a loaded engine runs one worker (parallel.dp_size=1)")
        self.workers = [EngineWorker(i, f"{self.replica_id}#{i}", worker_run(run, i), engine if i == 0 else None)
                        for i in range(dp)]
        self.load_error: Optional[str] = None
        # How the first engine started: seconds in all, to load, and each warm-up run (GET /health shows it).
        self.startup: Optional[dict] = None
        self.ready = threading.Event()
        self._done: dict[str, threading.Event] = {}
        self._done_lock = threading.Lock()
        self._cancel: set[str] = set()
        self._running: set[str] = set()
        self._release = threading.Event()  # draining: give the running job back to the queue
        self._wake = threading.Condition()  # a job was submitted here: look at the queue now
        self._stop = threading.Event()
        self._draining = threading.Event()
        # Held from a claim in the store until the job is in _running: drain() waits on it, so a job claimed
        # as draining begins is seen (finished or given back), never left in_progress until its lease lapses.
        self._claim_lock = threading.Lock()
        self._load_lock = threading.Lock()
        for worker in self.workers:
            worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"sgld-engine-worker-{worker.index}",
                                             daemon=True)
        self._heart = threading.Thread(target=self._beat, name="sgld-heartbeat", daemon=True)
        self._recover()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Register this replica, then start the worker (it loads the engine first when none was given)."""
        self.store.register(self.replica_id, self.model_id, f"{self.run.server.host}:{self.run.server.port}")
        self._heart.start()
        for worker in self.workers:
            worker.thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the worker to stop after the current job; leave the replica registry (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for worker in self.workers:
            if worker.thread is not None and worker.thread.is_alive():
                worker.thread.join(timeout)
            if worker.engine is not None:  # a multi-rank engine's ranks exit here
                worker.engine.stop()
        try:
            self.store.unregister(self.replica_id)
        except Exception as exc:  # noqa: BLE001 - the store may be down; the registry entry then just ages out
            log.warning("could not leave the replica registry: %s", exc)

    def drain(self, timeout: float) -> None:
        """Stop claiming jobs; let the running one finish within ``timeout`` seconds, else give it back to the queue."""
        self._draining.set()
        with self._claim_lock:  # a claim under way lands in _running first; none starts after this
            pass
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

    @property
    def engine(self) -> Optional[Engine]:
        """An engine that runs (any of them: they serve one model; requests are checked against it)."""
        return next((w.engine for w in self.workers if w.alive), None)

    def _load_engine(self, worker: EngineWorker) -> None:
        start = time.perf_counter()
        step, engine = "load", None
        try:
            # One load at a time: diffusers/transformers load through process-wide state (meta-device init).
            with self._load_lock:
                engine = self.load(worker.run, lambda message: self._engine_failed(worker, message))
            loaded = time.perf_counter()
            step = "warm-up"
            warmed = warm_up(engine, worker.run)
        except Exception as exc:  # noqa: BLE001 - reported on /health, the server keeps answering
            log.exception("model failed to %s (engine worker %d)", step, worker.index)
            if engine is not None:
                engine.stop()  # a rank group's processes
            worker.failure = f"{type(exc).__name__}: {exc}" if step == "load" else f"warm-up failed: {type(exc).__name__}: {exc}"
            if not any(w.alive for w in self.workers):
                self.load_error = worker.failure
            return
        worker.engine = engine  # only now: jobs wait for the warm-up, which compiles
        total = time.perf_counter() - start
        if self.startup is None:
            self.startup = {"seconds": round(total, 2), "load_s": round(loaded - start, 2), "warmup": warmed,
                            "torch_compile": bool(worker.run.model.enable_torch_compile)}
        log.info("model %s ready in %.1f s (load %.1f s, warm-up %.1f s)%s", self.run.model.name, total,
                 loaded - start, total - (loaded - start),
                 f" (engine worker {worker.index})" if len(self.workers) > 1 else "")
        self.ready.set()

    def _engine_failed(self, worker: EngineWorker, message: str) -> None:
        """A multi-rank engine's group ended: its worker stops; /health names it; the others go on."""
        worker.failure = f"the model's rank group failed: {message}"
        if len(self.workers) > 1:
            log.error("engine worker %d failed: %s; %d other(s) keep serving", worker.index, message,
                      sum(w.alive for w in self.workers))
        if not any(w.alive for w in self.workers):
            self.load_error = worker.failure
            self.ready.clear()

    def worker_states(self) -> list[dict]:
        """Each engine worker: its index and ``ok``, ``loading`` or the reason it failed."""
        return [{"index": w.index, "status": "ok" if w.alive else (w.failure or "loading")} for w in self.workers]

    def _beat(self) -> None:
        """Heartbeat: renew this replica's registration and its running jobs' leases; re-queue lost jobs."""
        server = self.run.server
        interval = max(0.2, min(server.lease_s / 3, 5.0))
        while not self._stop.wait(interval):
            try:
                self.store.heartbeat(self.replica_id, draining=self._draining.is_set())
                self.store.renew([w.id for w in self.workers], list(self._running), server.lease_s)
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
        """Bytes of output files kept."""
        return self.outputs.total_bytes()

    def share_inputs(self, paths: list[Path]) -> list[str]:
        """A request's saved input images as every replica can read them (published when outputs are remote)."""
        self.outputs.publish([path.name for path in paths])
        return [self.outputs.url(path.name) for path in paths]

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
        if run is not None:  # recorded with the job: any replica of the model batches by it
            key = self._key_of(job, run)
            job.batch_key = None if key is None else json.dumps(key)
        with self._done_lock:
            self._done[job.id] = threading.Event()
        if not self.store.insert(job, max_queued=self.run.server.max_queue):  # the bound of the shared queue
            with self._done_lock:
                self._done.pop(job.id, None)
            raise QueueFull
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
        self._remove_files(job)
        self._finish(job_id)
        return True

    def control(self, action: Callable[[Engine], Any]) -> Any:
        """Run ``action`` on every loaded engine between jobs (each waits for its running batch); the first's result."""
        results = []
        for worker in self.workers:
            if worker.alive:
                with worker.lock:
                    results.append(action(worker.engine))
        return results[0] if results else None

    @functools.cached_property
    def folder_model(self) -> FolderModel:
        """The served model as its folder describes it (kind, needs an image), known before it loads."""
        return FolderModel.of(self.run.model.path, self.run.model.download)

    @property
    def model_id(self) -> str:
        """The loaded model's id (what ``--model-path`` named)."""
        return self.run.model.path

    # -- the worker ------------------------------------------------------------------------------

    def _next(self, worker: EngineWorker) -> Optional[Job]:
        """Claim the oldest queued job of this model for ``worker``, waiting up to ``POLL_S`` for one."""
        job = self._claim(worker)
        if job is None:
            with self._wake:
                self._wake.wait(self.POLL_S)
        return job

    def _claim(self, worker: EngineWorker, batch_key: Optional[str] = None) -> Optional[Job]:
        """A queued job (with ``batch_key``, when given) claimed for ``worker``; None if none waits or the replica drains.

        A claimed job is in ``_running`` before this returns: draining waits for it."""
        with self._claim_lock:
            if self._draining.is_set():
                return None
            job = self.store.claim(self.model_id, worker.id, self.run.server.lease_s, batch_key=batch_key)
            if job is not None:
                self._running.add(job.id)
            return job

    def _work(self, worker: EngineWorker) -> None:
        if worker.engine is None:
            self._load_engine(worker)
        else:
            self.ready.set()
        while not self._stop.is_set() and not self._draining.is_set():
            if worker.failure is not None and self.engine is not None:
                return  # this worker's engine is gone; the others take the queue
            try:
                job = self._next(worker)
            except Exception as exc:  # noqa: BLE001 - the store is down: wait for it (/health says so)
                log.warning("worker: the job store is unreachable: %s", exc)
                self._stop.wait(1.0)
                continue
            if job is None:
                continue
            if self.metrics is not None:
                self.metrics.claimed.inc()
            if not worker.alive:
                self._fail(job, "model_unavailable", f"the model failed to load: {self.load_error or worker.failure}")
                self._running.discard(job.id)
                self._finish(job.id)
                continue
            jobs = [job]
            try:
                jobs = self._gather(job, worker)
                self._run(jobs, worker)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one job's bookkeeping error
                for job in jobs:
                    self._running.discard(job.id)
                    self._finish(job.id)
                    if isinstance(exc, sqlalchemy.exc.DBAPIError):
                        # The store went away mid-job: the job stays in_progress there, its lease lapses and
                        # it is re-queued (a run that counts as an attempt) once the store is back.
                        log.warning("job %s: the job store became unreachable while it ran; it will run again", job.id)
                        continue
                    log.exception("job %s (request_id=%s): unexpected error outside generation", job.id, job.request_id)
                    try:
                        self._fail(job, "internal_error", "the server hit an unexpected error while finishing this job")
                    except Exception as store_error:  # noqa: BLE001 - the store is down too: the lease brings it back
                        log.warning("job %s: could not record its failure: %s", job.id, store_error)

    # -- batching --------------------------------------------------------------------------------

    def batch_limit(self) -> int:
        """Most samples one forward may hold: the server's setting, within what the engine can batch."""
        return max(1, min(self.run.server.max_batch_size, self.engine.batch_limit()))

    @staticmethod
    def samples(job: Job) -> int:
        """How many outputs (samples in a batch) a job makes."""
        return int(job.options.get("n", 1)) if job.kind == "image" else 1

    def _key_of(self, job: Job, run: RunConfig) -> Optional[tuple]:
        """The batch key of ``job`` checked as ``run``. Too large a sample (``server.batch_max_pixels``) or an
        edit whose size follows its input image runs alone; adapters are part of the key (one set per forward).
        """
        from sgld.request import Request

        s = run.sampling
        if s.height is None or s.width is None:
            return None
        if not within_batch_pixels(s, self.engine.pipeline.spec.output == "video", self.run.server.batch_max_pixels):
            return None
        loras = json.dumps(job.options.get("loras"), sort_keys=True)
        return (self.engine.pipeline.spec.batch_key(Request.from_sampling(s)), loras)

    def _gather(self, job: Job, worker: EngineWorker) -> list[Job]:
        """``job`` and queued jobs that can share its forward (same batch key), claimed while ``batch_wait_ms`` lasts."""
        limit = self.batch_limit()
        count = self.samples(job)
        if limit <= 1 or count >= limit or job.batch_key is None:
            return [job]
        jobs = [job]
        start = time.perf_counter()
        deadline = start + self.run.server.batch_wait_ms / 1000
        while count < limit:
            other = self._claim(worker, batch_key=job.batch_key)
            if other is not None:
                if count + self.samples(other) > limit:  # too many images for this batch: it waits for the next
                    self.store.release(other.id, worker.id)
                    self._running.discard(other.id)
                    break
                jobs.append(other)
                count += self.samples(other)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._draining.is_set():
                break
            with self._wake:
                self._wake.wait(min(remaining, 0.02))
        if self.metrics is not None:
            self.metrics.batch_wait.observe(time.perf_counter() - start)
        return jobs

    # -- running ---------------------------------------------------------------------------------

    def _run(self, jobs: list[Job], worker: EngineWorker) -> None:
        """Run ``jobs`` (one batch key) through the engine together; each ends on its own outcome."""
        started = time.perf_counter()
        items, owners = [], []
        for job in jobs:
            for item in self._items(job, self._progress(job)):
                items.append(item)
                owners.append(job.id)
        limit = self.batch_limit()
        try:
            with worker.lock:
                outcomes = worker.engine.generate_batch(items, loras=jobs[0].options.get("loras"), max_batch_size=limit)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            outcomes = [exc] * len(items)
        if self.metrics is not None:
            for first in range(0, len(items), limit):
                self.metrics.batch_size.observe(min(limit, len(items) - first))
        for job in jobs:
            mine = [(item.options["output_file_name"], outcome)
                    for owner, item, outcome in zip(owners, items, outcomes) if owner == job.id]
            try:
                status = self._settle(job, mine, worker)
            finally:
                self._running.discard(job.id)
                self._cancel.discard(job.id)
                self._finish(job.id)
            if "image_path" in job.options:  # an edit's uploads: needed until its job ends (a restart re-runs it)
                try:
                    self.outputs.remove(f"{job.id}_input")
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
            if job.id in self._cancel:
                raise JobCancelled
            if self._release.is_set():
                raise JobReleased
            try:
                # 0..99 while denoising; 100 only once the file is saved. One store round trip per step: the
                # progress write when it changes (it finds no row once deleted), else the existence check.
                percent = min(99, done * 100 // total)
                if percent != last[0]:
                    found = self.store.update(job.id, progress=percent)
                    last[0] = percent
                else:
                    found = done == 0 or self.store.exists(job.id)
                if not found:
                    raise JobCancelled
            except sqlalchemy.exc.DBAPIError:
                pass  # the store is down for now: the job goes on; progress and cancels resume when it is back
            if self.metrics is not None and done > 0:  # done == 0 marks the loop's start
                self.metrics.steps.inc()

        return on_step

    def _items(self, job: Job, on_step: Callable[[int, int], None]) -> list:
        """The job's outputs as batch items: a video, or ``n`` images with seeds seed, seed+1, ..."""
        from sgld.api import BatchItem

        options = engine_options(job.options)
        if "image_path" in options:  # uploads another replica may have saved: read where they live
            paths = options["image_path"]
            options["image_path"] = ([self.outputs.localize(p) for p in paths] if isinstance(paths, list)
                                     else self.outputs.localize(paths))
        common = {"save_output": True, "output_path": str(self.files_dir)}
        if job.kind == "video":
            return [BatchItem({**options, **common, "return_frames": True, "output_file_name": f"{job.id}.mp4"}, on_step)]
        fmt = job.options.get("output_format", "png")
        seed = int(options.pop("seed", self.run.sampling.seed))
        return [BatchItem({**options, **common, "seed": seed + i, "output_file_name": f"{job.id}_{i}.{fmt}"}, on_step)
                for i in range(self.samples(job))]

    def _settle(self, job: Job, outcomes: list[tuple[str, Any]], worker: EngineWorker) -> str:
        """Record how the job ended from its samples' (file name, outcome) (the first error wins); its final status."""
        error = next((o for _, o in outcomes if isinstance(o, BaseException)), None)
        if isinstance(error, JobReleased):
            log.info("job %s given back to the queue (this replica is draining)", job.id)
            self.store.release(job.id, worker.id)
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
        try:
            if job.kind == "video":
                thumb = self.files_dir / f"{job.id}_thumbnail.webp"
                _save_thumbnail(outcomes[0][1].frames[0], thumb)
                names.append(thumb.name)
            self.outputs.publish(names)  # remote outputs: to where every replica reads them
        except OSError as error:
            log.error("job %s (request_id=%s): could not store its output: %s", job.id, job.request_id, error)
            self._fail(job, "output_write_failed", f"could not store the output files in {self.outputs.location}: "
                                                  f"{type(error).__name__}: {error}")
            self._remove_files(job)
            return "failed"
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
        self.outputs.remove(job.id)

    def output_file(self, job: Job, name: str):
        """One of the job's own output files, open for reading (wherever outputs live); FileNotFoundError if gone."""
        if name not in job.outputs or "/" in name or name.startswith("."):
            raise FileNotFoundError(name)
        return self.outputs.open(name)  # FileNotFoundError when it is gone


def _save_thumbnail(frame, path: Path) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path, format="WEBP")
