"""This replica's side of the shared queue: submitting, waiting for and deleting jobs, and claiming them.

The queue itself is the store (``server.store``). What lives here is the replica's own view of it:
the completion events HTTP threads wait on, the jobs its engines run (their leases are the
heartbeat's to renew), the ones a DELETE here asked to stop, and whether the replica drains
(it claims nothing more; its running jobs finish or are given back).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Callable, Optional

from sgld.config.schema import ServerConfig

from server.outputs import OutputFiles
from server.store import Job, JobStore

log = logging.getLogger("sgld.server")


class QueueFull(Exception):
    """The bounded queue has no room for a new job."""


class JobCancelled(Exception):
    """Raised inside the denoise loop when the running job was deleted (on any replica)."""


class JobReleased(Exception):
    """Raised inside the denoise loop when a draining replica gives its running job back to the queue."""


def new_id(kind: str) -> str:
    """An unguessable job id: ``video_<32 hex>`` / ``image_<32 hex>``."""
    return f"{kind}_{secrets.token_hex(16)}"


class JobQueue:
    """The jobs of one model as this replica submits, waits for, deletes and claims them."""

    # How often an idle worker looks at the shared queue for jobs other replicas accepted.
    POLL_S = 0.2

    def __init__(self, store: JobStore, model_id: str, limits: ServerConfig, outputs: OutputFiles):
        self.store = store
        self.model_id = model_id
        self.limits = limits  # max_queue bounds submissions; lease_s is each claim's lease
        self.outputs = outputs  # a deleted job's files go with it
        self._done: dict[str, threading.Event] = {}  # set when a job submitted here ends
        self._done_lock = threading.Lock()
        self._cancel: set[str] = set()
        self._running: set[str] = set()
        self._release = threading.Event()  # draining: give the running jobs back to the queue
        self._wake = threading.Condition()  # a job was submitted or re-queued: look at the queue now
        self._draining = threading.Event()
        # Held from a claim in the store until the job is in _running: drain() waits on it, so a job claimed
        # as draining begins is seen (finished or given back), never left in_progress until its lease lapses.
        self._claim_lock = threading.Lock()

    # -- submitting, waiting, deleting -----------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Persist a validated job in the shared queue; QueueFull when the queue is at its bound."""
        with self._done_lock:
            self._done[job.id] = threading.Event()
        if not self.store.insert(job, max_queued=self.limits.max_queue):  # the bound of the shared queue
            with self._done_lock:
                self._done.pop(job.id, None)
            raise QueueFull
        self.notify()
        return job

    def wait(self, job_id: str, timeout: float, gone: Optional[Callable[[], bool]] = None) -> Optional[Job]:
        """Block until the job ends (or ``timeout``); the job's record then. A job another replica runs is polled.

        ``gone``: asked every second; True (the waiting client went away) deletes the job, as a DELETE
        does (a running job stops after its current step), and returns None.
        """
        with self._done_lock:
            event = self._done.get(job_id)
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job is None or job.status not in ("queued", "in_progress") or time.monotonic() >= deadline:
                return job
            if gone is not None and gone():
                self.delete(job_id)
                return None
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
        self.outputs.remove(job.id)
        self._finish(job_id)
        return True

    def queued(self) -> int:
        """Jobs of this model waiting in the (shared) queue."""
        return self.store.queued(self.model_id)

    # -- claims ----------------------------------------------------------------------------------

    def claim(self, worker_id: str, batch_key: Optional[str] = None) -> Optional[Job]:
        """A queued job (with ``batch_key``, when given) claimed for ``worker_id``; None if none waits or the replica drains.

        A claimed job is in ``running`` before this returns: draining waits for it."""
        with self._claim_lock:
            if self._draining.is_set():
                return None
            job = self.store.claim(self.model_id, worker_id, self.limits.lease_s, batch_key=batch_key)
            if job is not None:
                self._running.add(job.id)
            return job

    def next(self, worker_id: str) -> Optional[Job]:
        """Claim the oldest queued job of this model for ``worker_id``, waiting up to ``POLL_S`` for one."""
        job = self.claim(worker_id)
        if job is None:
            self.wait_for_work(self.POLL_S)
        return job

    def wait_for_work(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a job is submitted or re-queued meanwhile."""
        with self._wake:
            self._wake.wait(seconds)

    def notify(self) -> None:
        """Wake whoever waits for work (a job came, or the replica stops)."""
        with self._wake:
            self._wake.notify_all()

    def give_back(self, job_id: str, worker_id: str) -> None:
        """Return a claimed job that did not start to the queue (it stays queued for whoever claims next)."""
        self.store.release(job_id, worker_id)
        self._running.discard(job_id)

    def interrupt(self, job_id: str) -> None:
        """Raise JobCancelled if a DELETE here cancelled the running job, JobReleased if the replica gives it back."""
        if job_id in self._cancel:
            raise JobCancelled
        if self._release.is_set():
            raise JobReleased

    def end(self, job_id: str) -> None:
        """The claimed job is over on this replica (however it ended): no longer running; its waiters wake."""
        self._running.discard(job_id)
        self._cancel.discard(job_id)
        self._finish(job_id)

    @property
    def running(self) -> list[str]:
        """The jobs this replica's engines hold (claimed, not yet ended)."""
        return list(self._running)

    # -- draining --------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether this replica is stopping (it claims no more jobs)."""
        return self._draining.is_set()

    def drain(self, timeout: float) -> None:
        """Stop claiming jobs; let the running ones finish within ``timeout`` seconds, else give them back to the queue."""
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

    def _finish(self, job_id: str) -> None:
        with self._done_lock:
            event = self._done.pop(job_id, None)
        if event is not None:
            event.set()
