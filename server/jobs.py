"""The job service: one replica of the service, wiring its queue, engine workers and registry entry.

Jobs live in the store (``server.store``): the API inserts them, the worker claims the oldest
one of its model under a lease that a heartbeat thread renews, and any replica's DELETE removes
the record, which the running worker notices within a step. With SQLite there is one replica;
with PostgreSQL every replica of the service shares the queue, and one that dies has its jobs
re-queued by the others when their leases expire.

The parts, each with its own state and locks:

- ``server.job_queue.JobQueue``: submit, wait, delete, claims, the running and cancelled jobs, draining;
- ``server.worker.EngineWorkers``: the engine workers (loading, the worker loop, running a batch);
- ``server.batching.Batching``: batch keys and gathering jobs that share a forward;
- ``server.replica.Replica``: registration, the heartbeat (leases, re-queueing lost jobs, the sweeper).

``JobService`` builds them, delegates the API the blueprints use, and orders start, stop and drain.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sgld.config.schema import RunConfig
from sgld.models.folder_model import FolderModel

from server.engine import Engine, EngineLoader, FolderCheck, load_engine
from server.job_queue import JobCancelled, JobQueue, JobReleased, QueueFull, new_id
from server.outputs import OutputFiles
from server.replica import Replica
from server.store_health import StoreHealth
from server.store import Job, JobStore, now, redacted, store_url
from server.worker import EngineWorker, EngineWorkers, engine_options, worker_run

# The names blueprints and tests import from here.
__all__ = ["EngineWorker", "JobCancelled", "JobReleased", "JobService", "QueueFull", "engine_options", "new_id",
           "worker_run"]

log = logging.getLogger("sgld.server")


class JobService:
    """Owns the store, the engine workers and the heartbeat of one replica.

    ``engine`` is a loaded engine, or None to load one from ``run`` with ``load`` in the
    background (``/health`` reports ``loading`` until it is ready).
    """

    def __init__(self, run: RunConfig, engine: Optional[Engine] = None, metrics: Any = None,
                 load: EngineLoader = load_engine):
        from sgld.model_builders.tiny import sgld_home

        self.run = run
        self.metrics = metrics
        self.outputs = OutputFiles(run.output.path, sgld_home())
        self.files_dir = self.outputs.local  # where the engine writes (the files' home unless outputs are remote)
        # SQLite lives beside local outputs; with remote outputs, in this host's staging space (one replica).
        self.output_dir = self.files_dir.parent
        self.store = JobStore(store_url(run.server.job_store, self.output_dir))
        log.info("job store: %s", redacted(self.store.url))
        self.started_at = time.time()
        self.queue = JobQueue(self.store, self.model_id, run.server, self.outputs)
        # One view of the store's outages for the heartbeat and the workers (one log line each way, lease time).
        self.store_health = StoreHealth(run.server.lease_s)
        self.replica = Replica(self.store, self.queue, run, self.outputs, metrics, self.store_health)
        self.replica_id = self.replica.id
        self.engines = EngineWorkers(run, self.queue, self.outputs, self.replica.worker_ids, engine, load, metrics,
                                     self.store_health)
        self.workers = self.engines.workers
        self.ready = self.engines.ready  # set once an engine has loaded and warmed up
        self._stopped = threading.Event()
        self.replica.recover()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Register this replica, then start the workers (each loads its engine first when none was given)."""
        self.replica.start()
        self.engines.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the workers to stop after the current job; leave the replica registry (once)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.replica.stop()
        self.engines.stop(timeout)
        self.replica.leave()  # after the workers: the registration outlives their last job

    def drain(self, timeout: float) -> None:
        """Stop claiming jobs; let the running one finish within ``timeout`` seconds, else give it back to the queue."""
        self.queue.drain(timeout)
        self.stop()

    @property
    def draining(self) -> bool:
        """Whether this replica is stopping (it claims no more jobs)."""
        return self.queue.draining

    # -- the engines -----------------------------------------------------------------------------

    @property
    def engine(self) -> Optional[Engine]:
        """What requests are checked against: an engine that runs (any of them: they serve one model), or while the
        engines load, the model folder's description (requests then queue for them). None once every load failed."""
        engine = self.engines.engine
        if engine is None and self.load_error is None:
            return FolderCheck(self.run, self.folder_model)
        return engine

    @property
    def load_error(self) -> Optional[str]:
        """Why no engine runs (every worker's failed to load or died), or None."""
        return self.engines.load_error

    @property
    def startup(self) -> Optional[dict]:
        """How the first engine started: seconds in all, to load, and each warm-up run."""
        return self.engines.startup

    def worker_states(self) -> list[dict]:
        """Each engine worker: its index and ``ok``, ``loading`` or the reason it failed."""
        return self.engines.states()

    def control(self, action: Callable[[Engine], Any]) -> Any:
        """Run ``action`` on every loaded engine between jobs (each waits for its running batch); the first's result."""
        return self.engines.control(action)

    @functools.cached_property
    def folder_model(self) -> FolderModel:
        """The served model as its folder describes it (kind, needs an image), known before it loads."""
        return FolderModel.of(self.run.model.path, self.run.model.download)

    @property
    def model_id(self) -> str:
        """The loaded model's id (what ``--model-path`` named)."""
        return self.run.model.path

    def served_models(self) -> list[str]:
        """The models live replicas of the service serve (this one's included)."""
        return self.replica.served_models()

    # -- jobs ------------------------------------------------------------------------------------

    def queued(self) -> int:
        """Jobs of this model waiting in the (shared) queue."""
        return self.queue.queued()

    def submit(self, kind: str, prompt: str, options: dict, size: str, seconds: Optional[str], job_id: Optional[str] = None,
               request_id: Optional[str] = None, run: Optional[RunConfig] = None,
               requested_model: Optional[str] = None) -> Job:
        """Persist a validated job in the shared queue; QueueFull when the queue is at its bound.

        ``request_id``: the creating request's x-request-id, named by the job's error and log lines.
        ``run``: the request's RunConfig as the engine checked it: its batch key is recorded with the job.
        ``requested_model``: the model name the request gave (echoed back). Image jobs record this replica as
        their origin: its HTTP thread waits for them, and without it nobody can receive them.
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
            requested_model=requested_model,
            origin=self.replica_id if kind == "image" else None,
        )
        if run is not None:  # recorded with the job: any replica of the model batches by it
            job.batch_key = self.engines.batching.key(job, run, self.engine)
        return self.queue.submit(job)

    def wait(self, job_id: str, timeout: float, gone: Optional[Callable[[], bool]] = None) -> Optional[Job]:
        """Block until the job ends (or ``timeout``); the job's record then. A job another replica runs is polled.
        ``gone`` returning True (the client went away) deletes the job and returns None."""
        return self.queue.wait(job_id, timeout, gone)

    def delete(self, job_id: str) -> bool:
        """Cancel a queued or running job (here or on another replica) and remove its record and files."""
        return self.queue.delete(job_id)

    # -- files -----------------------------------------------------------------------------------

    def output_bytes(self) -> int:
        """Bytes of output files kept."""
        return self.outputs.total_bytes()

    def share_inputs(self, paths: list[Path]) -> list[str]:
        """A request's saved input images as every replica can read them (published when outputs are remote)."""
        self.outputs.publish([path.name for path in paths])
        return [self.outputs.url(path.name) for path in paths]

    def output_file(self, job: Job, name: str):
        """One of the job's own output files, open for reading (wherever outputs live); FileNotFoundError if gone."""
        if name not in job.outputs or "/" in name or name.startswith("."):
            raise FileNotFoundError(name)
        return self.outputs.open(name)  # FileNotFoundError when it is gone
