"""The job store's reachability as this replica sees it: one log line when it goes away, one when it is back,
and how long this replica's leases last without it.

While the store is down the heartbeat cannot renew leases, so they lapse ``server.lease_s`` after the last
renewal; until then no other replica may take this replica's running jobs, and a worker that finished one
keeps retrying its store writes instead of throwing the job away.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

import sqlalchemy.exc

log = logging.getLogger("sgld.server")

T = TypeVar("T")


class StoreHealth:
    """Outage bookkeeping shared by the heartbeat and the engine workers of one replica."""

    # Waits between retries of a store write while the lease holds: from the first value, doubling, to the last.
    RETRY_FIRST_S, RETRY_MAX_S = 0.2, 2.0

    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic):
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._renewed_at = clock()  # leases start with the replica (claims set their own, later ones)

    def renewed(self) -> None:
        """The heartbeat renewed this replica's leases: they hold ``lease_s`` from now."""
        with self._lock:
            self._renewed_at = self._clock()
        self.reachable()

    def lease_deadline(self) -> float:
        """When this replica's leases lapse if the store stays away (the clock's time; conservative: a job
        claimed since the last renewal holds a little longer)."""
        with self._lock:
            return self._renewed_at + self.lease_s

    def unreachable(self, what: str, exc: BaseException) -> None:
        """A store call failed: logged once per outage."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = self._clock()
        if first:
            log.warning("the job store is unreachable (%s: %s: %s); retrying until it is back", what,
                        type(getattr(exc, "orig", exc)).__name__, str(exc).splitlines()[0] if str(exc) else "")

    def reachable(self) -> None:
        """A store call succeeded: ends an outage (logged once)."""
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.info("the job store is reachable again after %.1f s", self._clock() - since)

    def retry_while_leased(self, what: str, write: Callable[[], T], stop: threading.Event) -> T:
        """``write()``, retried with a bounded backoff while the store is unreachable and the lease holds.

        Raises the store's error once the lease has lapsed (another replica may run the job by then) or when
        ``stop`` is set."""
        wait = self.RETRY_FIRST_S
        while True:
            try:
                result = write()
            except sqlalchemy.exc.DBAPIError as exc:
                self.unreachable(what, exc)
                if self._clock() + wait >= self.lease_deadline() or stop.wait(wait):
                    raise
                wait = min(wait * 2, self.RETRY_MAX_S)
                continue
            self.reachable()
            return result
