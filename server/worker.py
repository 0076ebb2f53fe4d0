"""The replica's engine workers: each loads its engine, then claims jobs and runs them in batches.

The engine is not re-entrant: each worker runs one batch at a time on its own engine
(``--dp-size`` gives several workers, each with its share of the GPUs). A job's samples report
progress from the step callback, which also stops them when the job is deleted or the draining
replica gives it back; each job then ends on its own samples' outcomes.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import sqlalchemy.exc

from sgld.config.schema import RunConfig
from sgld.errors import UserError

from server.batching import Batching, samples
from server.engine import Engine, EngineLoader, load_engine
from server.job_queue import JobCancelled, JobQueue, JobReleased
from server.outputs import OutputFiles
from server.perf_log import PerfLog, perf_log_dir, stage_timings
from server.store import Job, JobStore, now
from server.store_health import StoreHealth
from server.warmup import warm_up

log = logging.getLogger("sgld.server")
# Request options naming input images the server saved beside the outputs (``<job>_input*``).
INPUT_OPTIONS = frozenset({"image_path", "last_image_path", "reference_image"})


class EngineWorker:
    """One engine of the replica and the thread that feeds it (``--dp-size`` gives several)."""

    def __init__(self, index: int, worker_id: str, run: RunConfig, engine: Optional[Engine] = None):
        self.index = index
        self.id = worker_id  # the store's ``worker`` of the jobs it runs
        self.run = run  # its share of the GPUs (parallel.first_gpu) as one engine's run
        self.engine = engine
        self.failure: Optional[str] = None  # why its engine failed to load or died
        self.lock = threading.Lock()  # held while the engine runs a batch or a control action
        self.last_batch: tuple[float, Optional[float]] = (0.0, None)  # its last batch: seconds, GPU peak (MB)
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
    """A job's options as the engine takes them: its outputs (``n``, format, seeds) and adapters are set per batch."""
    return {k: v for k, v in options.items() if k not in ("n", "output_format", "loras", "seeds")}


class EngineWorkers:
    """The replica's engine workers and their threads; ``ready`` once one engine has loaded and warmed up.

    ``engine`` is a loaded engine (one worker), or None to load each worker's with ``load`` in the background.
    """

    def __init__(self, run: RunConfig, queue: JobQueue, outputs: OutputFiles, worker_ids: list[str],
                 engine: Optional[Engine] = None, load: EngineLoader = load_engine, metrics: Any = None,
                 health: Optional[StoreHealth] = None):
        if engine is not None and len(worker_ids) != 1:
            raise ValueError("a JobService given a loaded engine runs one worker (parallel.dp_size=1)")
        self.run = run
        self.queue = queue
        self.store: JobStore = queue.store
        self.outputs = outputs
        self.files_dir = outputs.local  # where the engine writes (the files' home unless outputs are remote)
        self.load = load
        self.metrics = metrics
        # Store outages: logged once; a finished job's store writes are retried while its lease holds.
        self.health = health or StoreHealth(run.server.lease_s)
        self.batching = Batching(run.server, queue, metrics)
        self.workers = [EngineWorker(i, worker_id, worker_run(run, i), engine if i == 0 else None)
                        for i, worker_id in enumerate(worker_ids)]
        self.load_error: Optional[str] = None
        # How the first engine started: seconds in all, to load, and each warm-up run (GET /health shows it).
        self.startup: Optional[dict] = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._load_lock = threading.Lock()
        self._announced = False  # the [server-load] line is printed once, when the first engine has loaded
        self.perf_log = PerfLog(perf_log_dir(run))
        for worker in self.workers:
            worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"sgld-engine-worker-{worker.index}",
                                             daemon=True)

    def start(self) -> None:
        """Start each worker's thread (it loads its engine first when none was given)."""
        for worker in self.workers:
            worker.thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the workers to stop after their current batch (waiting up to ``timeout`` each); stop their engines."""
        self._stop.set()
        self.queue.notify()
        for worker in self.workers:
            if worker.thread is not None and worker.thread.is_alive():
                worker.thread.join(timeout)
            if worker.engine is not None:  # a multi-rank engine's ranks exit here
                worker.engine.stop()

    @property
    def engine(self) -> Optional[Engine]:
        """An engine that runs (any of them: they serve one model; requests are checked against it)."""
        return next((w.engine for w in self.workers if w.alive), None)

    def states(self) -> list[dict]:
        """Each engine worker: its index and ``ok``, ``loading`` or the reason it failed."""
        return [{"index": w.index, "status": "ok" if w.alive else (w.failure or "loading")} for w in self.workers]

    def control(self, action: Callable[[Engine], Any]) -> Any:
        """Run ``action`` on every loaded engine between jobs (each waits for its running batch); the first's result."""
        results = []
        for worker in self.workers:
            if worker.alive:
                with worker.lock:
                    results.append(action(worker.engine))
        return results[0] if results else None

    # -- loading ---------------------------------------------------------------------------------

    def _load_engine(self, worker: EngineWorker) -> None:
        start = time.perf_counter()
        step, engine = "load", None
        try:
            # One load at a time: diffusers/transformers load through process-wide state (meta-device init).
            with self._load_lock:
                engine = self.load(worker.run, lambda message: self._engine_failed(worker, message))
                if not self._announced:  # SGLang's start-up line (its clock excludes the warm-up); tools read it
                    self._announced = True
                    log.info("[server-load] workers_ready_monotonic_ns=%d", time.monotonic_ns())
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

    # -- the worker loop -------------------------------------------------------------------------

    def _work(self, worker: EngineWorker) -> None:
        if worker.engine is None:
            self._load_engine(worker)
        else:
            self.ready.set()
        while not self._stop.is_set() and not self.queue.draining:
            if worker.failure is not None and self.engine is not None:
                return  # this worker's engine is gone; the others take the queue
            try:
                job = self.queue.next(worker.id)
            except Exception as exc:  # noqa: BLE001 - the store is down: wait for it (/health says so)
                self.health.unreachable("claiming jobs", exc)
                self._stop.wait(1.0)
                continue
            if job is None:
                continue
            if self.metrics is not None:
                self.metrics.claimed.inc()
            if not worker.alive:
                self._fail(job, "model_unavailable", f"the model failed to load: {self.load_error or worker.failure}")
                self.queue.end(job.id)
                continue
            jobs = [job]
            try:
                jobs = self.batching.gather(job, worker.id, worker.engine)
                self._run(jobs, worker)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one job's bookkeeping error
                for job in jobs:
                    self.queue.end(job.id)
                    if isinstance(exc, sqlalchemy.exc.DBAPIError):
                        # The store stayed away past the job's lease: another replica may run it by now. It stays
                        # in_progress there and is re-queued (a run that counts as an attempt) once the store is back.
                        log.warning("job %s: the job store stayed unreachable past its lease; it will run again",
                                    job.id)
                        continue
                    log.exception("job %s (request_id=%s): unexpected error outside generation", job.id, job.request_id)
                    try:
                        self._fail(job, "internal_error", "the server hit an unexpected error while finishing this job")
                    except Exception as store_error:  # noqa: BLE001 - the store is down too: the lease brings it back
                        log.warning("job %s: could not record its failure: %s", job.id, store_error)

    # -- running a batch -------------------------------------------------------------------------

    def _run(self, jobs: list[Job], worker: EngineWorker) -> None:
        """Run ``jobs`` (one batch key) through the engine together; each ends on its own outcome."""
        started = time.perf_counter()
        items, owners = [], []
        for job in jobs:
            for item in self._items(job, self._progress(job)):
                items.append(item)
                owners.append(job.id)
        limit = self.batching.limit(worker.engine)
        try:
            with worker.lock:
                _reset_gpu_peak()
                batch_start = time.perf_counter()
                outcomes = worker.engine.generate_batch(items, loras=jobs[0].options.get("loras"), max_batch_size=limit)
                # What each job of the batch reports (SGLang's inference_time_s and peak_memory_mb).
                worker.last_batch = (round(time.perf_counter() - batch_start, 3), _gpu_peak_mb())
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            outcomes = [exc] * len(items)
        if self.metrics is not None:
            for first in range(0, len(items), limit):
                self.metrics.batch_size.observe(min(limit, len(items) - first))
        for job in jobs:
            mine = [(item.options["output_file_name"], outcome)
                    for owner, item, outcome in zip(owners, items, outcomes) if owner == job.id]
            if not any(isinstance(outcome, BaseException) for _, outcome in mine):  # before clients see it done
                self.perf_log.record(job.id, stage_timings(mine[0][1]), time.perf_counter() - started,
                                     worker.last_batch[1])  # the batch's GPU peak (None without a GPU here)
            try:
                # A short store outage must not throw the finished job away: its writes wait while the lease holds.
                status = self.health.retry_while_leased(f"recording job {job.id}",
                                                        lambda: self._settle(job, mine, worker), self._stop)
            finally:
                self.queue.end(job.id)
                self.perf_log.forget(job.id)  # its step times, when it did not complete
            if INPUT_OPTIONS & set(job.options):  # its uploads: needed until its job ends (a restart re-runs it)
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
            self.perf_log.step(job.id, done)
            self.queue.interrupt(job.id)  # deleted here, or given back by a draining replica
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
            except sqlalchemy.exc.DBAPIError as exc:
                # The store is down for now: the job goes on; progress and cancels resume when it is back.
                self.health.unreachable("writing progress", exc)
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
        seed = int(options.pop("seed", self.run.sampling.seed))
        seeds = job.options.get("seeds") or [seed + i for i in range(samples(job))]  # SGLang's list, or consecutive
        if job.kind == "video":  # the first frames make the thumbnail
            return [BatchItem({**options, **common, "seed": seeds[i], "return_frames": i == 0,
                               "output_file_name": video_file_name(job.id, i)}, on_step) for i in range(samples(job))]
        fmt = job.options.get("output_format", "png")
        return [BatchItem({**options, **common, "seed": seeds[i], "output_file_name": f"{job.id}_{i}.{fmt}"}, on_step)
                for i in range(samples(job))]

    def _settle(self, job: Job, outcomes: list[tuple[str, Any]], worker: EngineWorker) -> str:
        """Record how the job ended from its samples' (file name, outcome) (the first error wins); its final status."""
        error = next((o for _, o in outcomes if isinstance(o, BaseException)), None)
        if isinstance(error, JobReleased):
            log.info("job %s given back to the queue (this replica is draining)", job.id)
            self.store.release(job.id, worker.id)
            self.outputs.remove(job.id)
            return "released"
        if isinstance(error, JobCancelled):
            log.info("job %s cancelled (request_id=%s)", job.id, job.request_id)
            self.outputs.remove(job.id)
            return "cancelled"
        if isinstance(error, UserError):
            self._fail(job, "invalid_request", str(error))
            return "failed"
        if isinstance(error, OSError):  # the output directory is full, read-only or gone
            log.error("job %s (request_id=%s): could not write its output: %s", job.id, job.request_id, error)
            self._fail(job, "output_write_failed", f"could not write the output file in {self.files_dir}: {error}")
            self.outputs.remove(job.id)
            return "failed"
        if error is not None:
            log.error("job %s failed (request_id=%s)", job.id, job.request_id, exc_info=error)
            self._fail(job, "generation_failed", f"{type(error).__name__}: {error}")
            self.outputs.remove(job.id)
            return "failed"
        if self.store.get(job.id) is None:  # deleted while saving
            self.outputs.remove(job.id)
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
            self.outputs.remove(job.id)
            return "failed"
        retention = retention_of(job, self.run.server)
        finished = now()
        seconds, peak_mb = worker.last_batch
        self.store.update(job.id, status="completed", progress=100, completed_at=finished, outputs=names,
                          expires_at=None if retention is None else finished + int(math.ceil(retention)),
                          inference_time_s=seconds, peak_memory_mb=peak_mb)
        return "completed"

    def _fail(self, job: Job, code: str, message: str) -> None:
        if job.request_id:
            message = f"{message} (request_id={job.request_id})"
        if self.store.get(job.id) is not None:
            self.store.update(job.id, status="failed", completed_at=now(), error_code=code, error_message=message)


def video_file_name(job_id: str, index: int) -> str:
    """A video job's ``index``-th MP4 (``<id>.mp4`` for the first: one-output jobs keep their one name)."""
    return f"{job_id}.mp4" if index == 0 else f"{job_id}_{index}.mp4"


def retention_of(job: Job, limits: Any) -> Optional[float]:
    """Seconds a completed job's files are kept: ``server.retention_s``; unset, images keep
    ``server.image_retention_s`` (their URLs are for fetching the result, not for storage) and videos stay."""
    if limits.retention_s is not None:
        return limits.retention_s
    return limits.image_retention_s if job.kind == "image" else None


def _reset_gpu_peak() -> None:
    torch = sys.modules.get("torch")  # an engine in this process has imported it; a rank group's front has not
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_mb() -> Optional[float]:
    """The GPU memory peak since the last reset (this process's current device), or None without a GPU here."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _save_thumbnail(frame, path: Path) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path, format="WEBP")
