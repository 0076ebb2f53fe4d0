"""The job service: a bounded queue feeding one engine worker thread (the engine is not re-entrant)."""

from __future__ import annotations

import functools
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.folder_model import FolderModel

from server.engine import Engine, EngineLoader, load_engine
from server.store import Job, JobStore, now

log = logging.getLogger("sgld.server")


class QueueFull(Exception):
    """The bounded queue has no room for a new job."""


class JobCancelled(Exception):
    """Raised inside the denoise loop when the running job was deleted."""


class JobQueue:
    """FIFO of job ids: new submissions are bounded, jobs recovered after a restart are not."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._items: deque[str] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def submit(self, job_id: str, record: Callable[[], None]) -> None:
        """Run ``record`` (persist the job) and enqueue it, or raise QueueFull without recording."""
        with self._cond:
            if len(self._items) >= self.max_size:
                raise QueueFull
            record()
            self._items.append(job_id)
            self._cond.notify()

    def requeue(self, job_id: str) -> None:
        """Enqueue a job that was accepted before a restart (never refused)."""
        with self._cond:
            self._items.append(job_id)
            self._cond.notify()

    def remove(self, job_id: str) -> bool:
        """Drop a queued job; True when it was waiting."""
        with self._cond:
            try:
                self._items.remove(job_id)
                return True
            except ValueError:
                return False

    def position(self, job_id: str) -> Optional[int]:
        """0-based place in the queue, or None."""
        with self._cond:
            try:
                return self._items.index(job_id)
            except ValueError:
                return None

    def get(self, timeout: float) -> Optional[str]:
        """The next job id, or None after ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None


def new_id(kind: str) -> str:
    """An unguessable job id: ``video_<32 hex>`` / ``image_<32 hex>``."""
    return f"{kind}_{secrets.token_hex(16)}"


class JobService:
    """Owns the store, the queue, the engine and the worker thread.

    ``engine`` is a loaded engine, or None to load one from ``run`` with ``load`` in the
    background (``/health`` reports ``loading`` until it is ready).
    """

    def __init__(self, run: RunConfig, engine: Optional[Engine] = None, metrics: Any = None,
                 load: EngineLoader = load_engine):
        self.run = run
        self.load = load
        self.output_dir = Path(run.output.path).expanduser().resolve()
        self.files_dir = self.output_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.output_dir / "jobs.sqlite3")
        self.queue = JobQueue(run.server.max_queue)
        self.metrics = metrics
        self.engine: Optional[Engine] = engine
        self.load_error: Optional[str] = None
        self.ready = threading.Event()
        self._done: dict[str, threading.Event] = {}
        self._done_lock = threading.Lock()
        self._cancel: set[str] = set()
        self._running: Optional[str] = None
        # Held while the engine runs a job or a control action (LoRA endpoints): the engine is not re-entrant.
        self.engine_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="sgld-engine-worker", daemon=True)
        self._recover()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (it loads the engine first when none was given)."""
        self._worker.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the worker to stop after the current job."""
        self._stop.set()
        self._worker.join(timeout)
        if self.engine is not None:  # a multi-rank engine's ranks exit here
            self.engine.stop()

    def _recover(self) -> None:
        """Requeue every job a previous process accepted but did not finish."""
        for job in self.store.active():
            if job.status == "in_progress":
                log.info("job %s was interrupted by a restart; running it again", job.id)
            self.store.update(job.id, status="queued", progress=0, started_at=None)
            self.queue.requeue(job.id)

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

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, kind: str, prompt: str, options: dict, size: str, seconds: Optional[str], job_id: Optional[str] = None,
               request_id: Optional[str] = None) -> Job:
        """Persist and enqueue a validated job; QueueFull when the queue is at its bound.

        ``request_id``: the creating request's x-request-id, named by the job's error and log lines.
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
        with self._done_lock:
            self._done[job.id] = threading.Event()
        try:
            self.queue.submit(job.id, lambda: self.store.insert(job))
        except QueueFull:
            with self._done_lock:
                self._done.pop(job.id, None)
            raise
        return job

    def wait(self, job_id: str, timeout: float) -> Optional[Job]:
        """Block until the job ends (or ``timeout``); the job's record then."""
        with self._done_lock:
            event = self._done.get(job_id)
        if event is not None:
            event.wait(timeout)
        return self.store.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Cancel a queued or running job and remove its record and files."""
        job = self.store.get(job_id)
        if job is None:
            return False
        self.queue.remove(job_id)
        if self._running == job_id:
            self._cancel.add(job_id)
        self.store.delete(job_id)
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

    def _work(self) -> None:
        if self.engine is None:
            self._load_engine()
        else:
            self.ready.set()
        while not self._stop.is_set():
            job_id = self.queue.get(timeout=0.5)
            if job_id is None:
                continue
            job = self.store.get(job_id)
            if job is None or job.status != "queued":
                continue
            if self.engine is None:
                self._fail(job, "model_unavailable", f"the model failed to load: {self.load_error}")
                continue
            try:
                self._run(job)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job's bookkeeping error
                log.exception("job %s (request_id=%s): unexpected error outside generation", job.id, job.request_id)
                self._fail(job, "internal_error", "the server hit an unexpected error while finishing this job")
                self._finish(job.id)

    def _run(self, job: Job) -> None:
        self._running = job.id
        started = time.perf_counter()
        self.store.update(job.id, status="in_progress", started_at=now(), progress=0, attempts=job.attempts + 1)
        last = [-1]

        def on_step(done: int, total: int) -> None:
            if job.id in self._cancel:
                raise JobCancelled
            # 0..99 while denoising; 100 only once the file is saved.
            percent = min(99, done * 100 // total)
            if percent != last[0]:
                last[0] = percent
                self.store.update(job.id, progress=percent)
            if self.metrics is not None and done > 0:  # done == 0 marks the loop's start
                self.metrics.steps.inc()

        try:
            with self.engine_lock:
                outputs = self._generate(job, on_step)
        except JobCancelled:
            log.info("job %s cancelled (request_id=%s)", job.id, job.request_id)
            self._remove_files(job)
            status = "cancelled"
        except UserError as exc:
            self._fail(job, "invalid_request", str(exc))
            status = "failed"
        except OSError as exc:  # the output directory is full, read-only or gone
            log.error("job %s (request_id=%s): could not write its output: %s", job.id, job.request_id, exc)
            self._fail(job, "output_write_failed", f"could not write the output file in {self.files_dir}: {exc}")
            self._remove_files(job)
            status = "failed"
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the server
            log.exception("job %s failed (request_id=%s)", job.id, job.request_id)
            self._fail(job, "generation_failed", f"{type(exc).__name__}: {exc}")
            self._remove_files(job)
            status = "failed"
        else:
            if self.store.get(job.id) is None:  # deleted while saving
                self._remove_files(job)
                status = "cancelled"
            else:
                self.store.update(job.id, status="completed", progress=100, completed_at=now(), outputs=outputs)
                status = "completed"
        finally:
            self._running = None
            self._cancel.discard(job.id)
            self._finish(job.id)
        if "image_path" in job.options:  # an edit's upload: needed until its job ends (a restart re-runs it)
            try:
                (self.files_dir / f"{job.id}_input.png").unlink(missing_ok=True)
            except OSError as exc:
                log.warning("job %s: could not remove its input image: %s", job.id, exc)
        if self.metrics is not None:
            self.metrics.job_seconds.labels(kind=job.kind, status=status).observe(time.perf_counter() - started)

    def _generate(self, job: Job, on_step: Callable[[int, int], None]) -> list[str]:
        options = dict(job.options)
        if job.kind == "video":
            name = f"{job.id}.mp4"
            result = self.engine.generate(
                step_callback=on_step, save_output=True, return_frames=True,
                output_path=str(self.files_dir), output_file_name=name, **options,
            )
            thumb = self.files_dir / f"{job.id}_thumbnail.webp"
            _save_thumbnail(result.frames[0], thumb)
            return [name, thumb.name]
        count = int(options.pop("n", 1))
        fmt = options.pop("output_format", "png")
        seed = int(options.pop("seed", self.run.sampling.seed))
        names = []
        for i in range(count):
            name = f"{job.id}_{i}.{fmt}"
            self.engine.generate(
                step_callback=on_step, save_output=True, output_path=str(self.files_dir),
                output_file_name=name, seed=seed + i, **options,
            )
            names.append(name)
        return names

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
