"""The job store: job records, the shared queue and the live replicas, in SQLite or PostgreSQL.

SQLite (WAL) under the output directory is the default: zero set-up, one server process.
PostgreSQL (``--job-store postgresql://user@host/db`` or ``SGLD_JOB_STORE``) lets several
replicas share one queue: each claims the oldest queued job of its model with row locking
(``FOR UPDATE SKIP LOCKED``), holds it under a lease it renews, and a replica that dies has its
jobs re-queued once their leases expire. SQL goes through SQLAlchemy Core; the schema through
Alembic migrations (``server/migrations``), applied at start under a lock so replicas starting
together do not race.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

ACTIVE = ("queued", "in_progress")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock held while migrating (any constant the replicas agree on).
MIGRATION_LOCK = 7_314_159

metadata = sa.MetaData()
jobs = sa.Table(
    "jobs", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, unique=True, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("progress", sa.Integer, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("size", sa.Text, nullable=False),
    sa.Column("seconds", sa.Text),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("completed_at", sa.BigInteger),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("worker", sa.Text),
    sa.Column("lease_until", sa.Float),
    sa.Column("batch_key", sa.Text),
    sa.Column("expires_at", sa.BigInteger),
    sa.Column("requested_model", sa.Text),
    sa.Column("inference_time_s", sa.Float),
    sa.Column("peak_memory_mb", sa.Float),
    sa.Column("origin", sa.Text),
)
replicas = sa.Table(
    "replicas", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
)


@dataclass
class Job:
    """One accepted generation request and where it stands."""

    id: str
    kind: str  # "video" or "image"
    status: str  # queued | in_progress | completed | failed | expired (its files removed: server.retention_s)
    model: str
    prompt: str
    options: dict
    size: str
    seconds: Optional[str]
    created_at: int
    progress: int = 0
    started_at: Optional[int] = None
    completed_at: Optional[int] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    outputs: list = field(default_factory=list)
    attempts: int = 0
    # The x-request-id of the request that created the job (named in its error and log lines).
    request_id: Optional[str] = None
    seq: int = 0
    worker: Optional[str] = None  # the replica running it
    lease_until: Optional[float] = None  # when another replica may take it back (Unix time)
    batch_key: Optional[str] = None  # what it must share with others to run in their batch (None: alone)
    expires_at: Optional[int] = None  # when its files are removed (server.retention_s; None: kept)
    requested_model: Optional[str] = None  # the model name the request gave, echoed back (None: none given)
    inference_time_s: Optional[float] = None  # seconds its generation took (set when it completes)
    peak_memory_mb: Optional[float] = None  # the GPU memory peak of its batch (None on the CPU)
    # The replica whose HTTP thread waits for it (image jobs): gone, no client can receive the result.
    origin: Optional[str] = None

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        data = dict(row._mapping)
        data["options"] = json.loads(data["options"])
        data["outputs"] = json.loads(data["outputs"])
        return cls(**data)


def store_url(configured: Optional[str], output_dir: Path) -> str:
    """The store's SQLAlchemy URL: ``--job-store``/``SGLD_JOB_STORE``, else SQLite in the output directory.

    ``postgresql://`` URLs use psycopg 3.
    """
    url = configured or os.environ.get("SGLD_JOB_STORE") or f"sqlite:///{Path(output_dir) / 'jobs.sqlite3'}"
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """The URL as logs may show it: the password replaced."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; replicas starting together take turns (PostgreSQL lock).

    A SQLite store written before migrations existed (a ``jobs`` table, no version) is stamped as
    the first revision, after adding any column it lacks, then upgraded.
    """
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        inspector = sa.inspect(conn)
        if inspector.has_table("jobs") and not inspector.has_table("alembic_version"):
            present = {column["name"] for column in inspector.get_columns("jobs")}
            if "request_id" not in present:  # the very first release's store
                conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN request_id TEXT"))
            command.stamp(config, "0001")
        command.upgrade(config, "head")


class JobStore:
    """Job records, the shared queue and the replica registry; thread-safe (a connection pool)."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        if self.dialect == "sqlite":
            path = Path(sa.engine.make_url(url).database)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path: Optional[Path] = path
            self.engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.path = None
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8,
                                           connect_args={"connect_timeout": 5})
        migrate(self.engine)
        self._insert_lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether several replicas can share this store (PostgreSQL)."""
        return self.dialect != "sqlite"

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- records ---------------------------------------------------------------------------------

    def insert(self, job: Job, max_queued: Optional[int] = None) -> bool:
        """Record a newly accepted job (committed before the client hears of it); False, recording nothing, when
        ``max_queued`` jobs of its model already wait.

        The count and the insert are one step for every replica: a PostgreSQL advisory lock per model
        (SQLite: one writer process, a lock here).
        """
        values = {f.name: getattr(job, f.name) for f in fields(Job) if f.name != "seq"}
        values["options"], values["outputs"] = json.dumps(job.options), json.dumps(job.outputs)
        with self._insert_lock, self.engine.begin() as conn:
            if max_queued is not None:
                if self.shared:
                    key = int.from_bytes(hashlib.sha256(job.model.encode()).digest()[:4], "big") % 2**31  # an int4
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": MIGRATION_LOCK, "b": key})
                waiting = conn.execute(sa.select(sa.func.count()).where(jobs.c.model == job.model,
                                                                        jobs.c.status == "queued")).scalar_one()
                if waiting >= max_queued:
                    return False
            conn.execute(jobs.insert().values(**values))
        return True

    def get(self, job_id: str) -> Optional[Job]:
        """The job, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return Job.from_row(row) if row else None

    def exists(self, job_id: str) -> bool:
        """Whether the job's record is still there (deleting it is how any replica cancels it)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(jobs.c.seq).where(jobs.c.id == job_id)).first() is not None

    def update(self, job_id: str, **values: Any) -> bool:
        """Set columns of one job; False when it no longer exists (deleted)."""
        if "outputs" in values:
            values["outputs"] = json.dumps(values["outputs"])
        with self.engine.begin() as conn:
            return conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values)).rowcount > 0

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; True when it existed."""
        with self.engine.begin() as conn:
            return conn.execute(jobs.delete().where(jobs.c.id == job_id)).rowcount > 0

    def page(self, kind: str, limit: int, order: str = "desc", after: Optional[str] = None) -> tuple[list[Job], bool]:
        """Up to ``limit`` jobs of ``kind`` after job ``after`` in creation order; and whether more follow."""
        query = sa.select(jobs).where(jobs.c.kind == kind)
        with self.engine.connect() as conn:
            if after is not None:
                anchor = conn.execute(sa.select(jobs.c.seq).where(jobs.c.id == after)).first()
                if anchor is None:
                    raise KeyError(after)
                query = query.where(jobs.c.seq < anchor.seq if order == "desc" else jobs.c.seq > anchor.seq)
            query = query.order_by(jobs.c.seq.desc() if order == "desc" else jobs.c.seq.asc()).limit(limit + 1)
            rows = conn.execute(query).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def count_by_status(self) -> dict[str, int]:
        """Number of jobs in each status."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)).fetchall()
        return {status: count for status, count in rows}

    def queued(self, model: str) -> int:
        """How many jobs of ``model`` wait in the shared queue."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(jobs.c.model == model, jobs.c.status == "queued")).scalar_one()

    # -- the shared queue --------------------------------------------------------------------------

    def claim(self, model: str, worker: str, lease_s: float, batch_key: Optional[str] = None) -> Optional[Job]:
        """Take the oldest queued job of ``model`` (with ``batch_key``, when given) for ``worker``; None if none waits.

        The job becomes in_progress under a lease of ``lease_s`` seconds and its attempt count goes
        up. Row locking (PostgreSQL ``SKIP LOCKED``; SQLite's single writer) gives each job to one worker.
        """
        oldest = sa.select(jobs.c.id).where(jobs.c.model == model, jobs.c.status == "queued")
        if batch_key is not None:
            oldest = oldest.where(jobs.c.batch_key == batch_key)
        oldest = oldest.order_by(jobs.c.seq).limit(1)
        if self.shared:
            oldest = oldest.with_for_update(skip_locked=True)
        clock = time.time()
        claim = (jobs.update().where(jobs.c.id == oldest.scalar_subquery(), jobs.c.status == "queued")
                 .values(status="in_progress", worker=worker, lease_until=clock + lease_s, started_at=int(clock),
                         progress=0, attempts=jobs.c.attempts + 1).returning(*jobs.c))
        with self.engine.begin() as conn:
            row = conn.execute(claim).first()
        return Job.from_row(row) if row else None

    def renew(self, workers: Iterable[str], job_ids: Iterable[str], lease_s: float) -> None:
        """Extend the leases of the running jobs ``job_ids`` that ``workers`` (one replica's) hold."""
        ids = list(job_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id.in_(ids), jobs.c.worker.in_(list(workers)),
                                             jobs.c.status == "in_progress").values(lease_until=time.time() + lease_s))

    def release(self, job_id: str, worker: str) -> None:
        """Give a running job back to the queue unfinished (a draining replica), its attempt not counted."""
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "in_progress")
                         .values(status="queued", worker=None, lease_until=None, progress=0, started_at=None,
                                 attempts=jobs.c.attempts - 1))

    def reclaim(self, max_attempts: int, every_running: bool = False) -> tuple[list[str], list[str]]:
        """Jobs whose worker is gone: those whose lease expired, or (``every_running``: a lone server starting
        over its own store) every running job.

        Each goes back to the queue, or fails with ``worker_lost`` once it has had ``max_attempts``
        attempts. Every job is handled by one replica only (conditional updates). Returns
        (re-queued ids, failed ids).
        """
        lost = jobs.c.status == "in_progress"
        if not every_running:
            lost = sa.and_(lost, jobs.c.lease_until < time.time())
        requeued, failed = [], []
        with self.engine.begin() as conn:
            candidates = sa.select(jobs.c.id, jobs.c.attempts).where(lost)
            if self.shared:
                candidates = candidates.with_for_update(skip_locked=True)
            for job_id, attempts in conn.execute(candidates).fetchall():
                if attempts >= max_attempts:
                    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.status == "in_progress").values(
                        status="failed", completed_at=int(time.time()), error_code="worker_lost", worker=None,
                        error_message=f"the server running this job was lost {attempts} time(s); it was not retried"))
                    failed.append(job_id)
                else:
                    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.status == "in_progress").values(
                        status="queued", worker=None, lease_until=None, progress=0, started_at=None))
                    requeued.append(job_id)
        return requeued, failed

    def drop_orphans(self, live: Iterable[str]) -> list[Job]:
        """Remove the queued or running jobs whose origin replica (whose HTTP thread waits for them: image
        requests) is not in ``live``: no client can receive them any more. The removed jobs (a running one's
        worker sees its record gone and stops, as after a DELETE)."""
        orphaned = sa.and_(jobs.c.origin.is_not(None), jobs.c.status.in_(ACTIVE), jobs.c.origin.not_in(list(live)))
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(jobs).where(orphaned)).fetchall()
            if rows:
                conn.execute(jobs.delete().where(jobs.c.id.in_([row.id for row in rows]), orphaned))
        return [Job.from_row(row) for row in rows]

    def expire_due(self) -> list[Job]:
        """Mark completed jobs whose ``expires_at`` passed as ``expired``; the jobs this call marked.

        Each job is marked by one caller only (a conditional update), so whichever replica's sweeper
        gets it removes its files, once.
        """
        clock = int(time.time())
        with self.engine.begin() as conn:
            due = sa.select(jobs.c.id).where(jobs.c.status == "completed", jobs.c.expires_at <= clock)
            if self.shared:
                due = due.with_for_update(skip_locked=True)
            ids = [row.id for row in conn.execute(due).fetchall()]
            if not ids:
                return []
            rows = conn.execute(jobs.update().where(jobs.c.id.in_(ids), jobs.c.status == "completed")
                                .values(status="expired").returning(*jobs.c)).fetchall()
        return [Job.from_row(row) for row in rows]

    # -- replicas ----------------------------------------------------------------------------------

    def register(self, replica: str, model: str, address: str) -> None:
        """Announce a live replica serving ``model``."""
        clock = time.time()
        with self.engine.begin() as conn:
            conn.execute(replicas.insert().values(id=replica, model=model, address=address, started_at=clock,
                                                  heartbeat_at=clock, draining=False))

    def heartbeat(self, replica: str, draining: bool = False) -> None:
        """Say the replica is alive (and whether it still takes jobs)."""
        with self.engine.begin() as conn:
            conn.execute(replicas.update().where(replicas.c.id == replica)
                         .values(heartbeat_at=time.time(), draining=draining))

    def unregister(self, replica: str) -> None:
        """Remove a replica that stopped."""
        with self.engine.begin() as conn:
            conn.execute(replicas.delete().where(replicas.c.id == replica))

    def live_replicas(self, within_s: float) -> list[dict]:
        """Replicas whose last heartbeat is at most ``within_s`` old (oldest first)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(replicas).where(replicas.c.heartbeat_at >= time.time() - within_s)
                                .order_by(replicas.c.started_at)).fetchall()
        return [dict(row._mapping) for row in rows]



def now() -> int:
    """Unix time in whole seconds, as OpenAI's objects use."""
    return int(time.time())
