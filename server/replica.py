"""This process as one replica of the service: its registration, heartbeat, job leases and the sweeper.

Every replica of a shared (PostgreSQL) store registers in the ``replicas`` table. Its heartbeat
thread renews that registration and the leases of the jobs its engines run, re-queues jobs whose
leases lapsed on a replica that died (failed ``worker_lost`` after ``server.max_attempts``), and
sweeps completed jobs past their retention. With SQLite there is one replica.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from typing import Any, Optional

from sgld.config.schema import RunConfig

from server.job_queue import JobQueue
from server.outputs import OutputFiles
from server.store import JobStore
from server.store_health import StoreHealth

log = logging.getLogger("sgld.server")


class Replica:
    """This replica's place in the registry and the heartbeat thread that keeps it and its jobs' leases alive."""

    def __init__(self, store: JobStore, queue: JobQueue, run: RunConfig, outputs: OutputFiles, metrics: Any = None,
                 health: Optional[StoreHealth] = None):
        self.store = store
        self.health = health or StoreHealth(run.server.lease_s)  # told when leases are renewed and of outages
        self.queue = queue  # its running jobs' leases are renewed; re-queued jobs wake its workers
        self.outputs = outputs  # expired jobs' files are removed
        self.metrics = metrics
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # The store's ``worker`` of each engine worker's jobs (``--dp-size`` gives several).
        self.worker_ids = [f"{self.id}#{i}" for i in range(run.parallel.dp_size)]
        self.model_id = run.model.path
        self.address = f"{run.server.host}:{run.server.port}"
        self.limits = run.server
        self._stop = threading.Event()
        self._heart = threading.Thread(target=self._beat, name="sgld-heartbeat", daemon=True)

    def recover(self) -> None:
        """Re-queue jobs whose worker is gone: with SQLite (one replica) every job left running by an earlier
        process; with a shared store those whose leases expired (the others are still someone's)."""
        # First the image jobs whose requests died with their server: nobody can receive them, so they do not run.
        self.drop_orphans([] if not self.store.shared else None)
        requeued, failed = self.store.reclaim(self.limits.max_attempts, every_running=not self.store.shared)
        for job_id in requeued:
            log.info("job %s was interrupted (its server stopped); running it again", job_id)
        for job_id in failed:
            log.warning("job %s failed: its server was lost %d times", job_id, self.limits.max_attempts)

    def start(self) -> None:
        """Register this replica and start its heartbeat."""
        self.store.register(self.id, self.model_id, self.address)
        self._heart.start()

    def beat(self) -> None:
        """One heartbeat: renew the registration and the running jobs' leases; re-queue lost jobs; sweep expired ones.

        Raises what the store raises when it is unreachable."""
        limits = self.limits
        self.store.heartbeat(self.id, draining=self.queue.draining)
        self.store.renew(self.worker_ids, self.queue.running, limits.lease_s)
        self.health.renewed()
        requeued, failed = self.store.reclaim(limits.max_attempts)
        self.drop_orphans()
        self.sweep()  # images always expire (server.image_retention_s); videos when server.retention_s is set
        if self.metrics is not None:
            self.metrics.leases_expired.inc(len(requeued) + len(failed))
            self.metrics.requeued.inc(len(requeued))
        for job_id in requeued:
            log.warning("job %s: its server stopped answering (lease expired); re-queued", job_id)
        for job_id in failed:
            log.warning("job %s: its server was lost %d times; failed", job_id, limits.max_attempts)
        if requeued:
            self.queue.notify()

    def _beat(self) -> None:
        interval = max(0.2, min(self.limits.lease_s / 3, 5.0))
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while; /health says so
                self.health.unreachable("heartbeat", exc)

    def sweep(self) -> None:
        """Remove the files of completed jobs past their ``expires_at`` (each job by one replica only)."""
        for job in self.store.expire_due():
            self.outputs.remove(job.id)
            log.info("job %s expired (its expires_at passed): its files are removed", job.id)

    def drop_orphans(self, live: Optional[list[str]] = None) -> None:
        """Remove image jobs whose waiting request is gone (their origin replica is not ``live``; None: the live
        replicas of the registry), with their files."""
        if live is None:
            live = [r["id"] for r in self.store.live_replicas(self.limits.lease_s)]
        for job in self.store.drop_orphans(live):
            self.outputs.remove(job.id)
            log.warning("image job %s (request_id=%s) dropped: the server whose client waited for it is gone, so "
                        "nobody can receive it", job.id, job.request_id)

    def served_models(self) -> list[str]:
        """The models live replicas of the service serve (this one's included)."""
        return sorted({r["model"] for r in self.store.live_replicas(self.limits.lease_s) if not r["draining"]}
                      | {self.model_id})

    def stop(self) -> None:
        """End the heartbeat (at its next wake-up); the registration stays until ``leave``."""
        self._stop.set()

    def leave(self) -> None:
        """Leave the replica registry."""
        try:
            self.store.unregister(self.id)
        except Exception as exc:  # noqa: BLE001 - the store may be down; the registry entry then just ages out
            log.warning("could not leave the replica registry: %s", exc)
