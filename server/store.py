"""Job records in SQLite (WAL) under the output directory: accepted jobs survive restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    options TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    error_code TEXT,
    error_message TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""
# Columns added after the first release: (name, SQL type), added to an older store when it opens.
ADDED_COLUMNS = (("request_id", "TEXT"),)

ACTIVE = ("queued", "in_progress")


@dataclass
class Job:
    """One accepted generation request and where it stands."""

    id: str
    kind: str  # "video" or "image"
    status: str  # queued | in_progress | completed | failed
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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        data = dict(row)
        data["options"] = json.loads(data["options"])
        data["outputs"] = json.loads(data["outputs"])
        return cls(**data)


class JobStore:
    """Thread-safe access to the jobs table: one SQLite connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(SCHEMA)
            present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in ADDED_COLUMNS:
                if name not in present:  # a store written by an older sgld
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def insert(self, job: Job) -> None:
        """Record a newly accepted job (committed before the client hears of it)."""
        self._connect().execute(
            "INSERT INTO jobs (id, kind, status, progress, model, prompt, options, size, seconds, created_at, request_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.kind, job.status, job.progress, job.model, job.prompt, json.dumps(job.options), job.size,
             job.seconds, job.created_at, job.request_id),
        )

    def get(self, job_id: str) -> Optional[Job]:
        """The job, or None."""
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns of one job."""
        if "outputs" in fields:
            fields["outputs"] = json.dumps(fields["outputs"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._connect().execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; True when it existed."""
        return self._connect().execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    def page(self, kind: str, limit: int, order: str = "desc", after: Optional[str] = None) -> tuple[list[Job], bool]:
        """Up to ``limit`` jobs of ``kind`` after job ``after`` in creation order; and whether more follow."""
        direction = "DESC" if order == "desc" else "ASC"
        where, args = "kind = ?", [kind]
        if after is not None:
            anchor = self._connect().execute("SELECT seq FROM jobs WHERE id = ?", (after,)).fetchone()
            if anchor is None:
                raise KeyError(after)
            where += " AND seq " + ("<" if order == "desc" else ">") + " ?"
            args.append(anchor["seq"])
        rows = self._connect().execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY seq {direction} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def active(self) -> Iterator[Job]:
        """Queued and interrupted jobs, oldest first (what a restart must run again)."""
        rows = self._connect().execute(
            f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE))}) ORDER BY seq", ACTIVE
        ).fetchall()
        return (Job.from_row(r) for r in rows)

    def count_by_status(self) -> dict[str, int]:
        """Number of jobs in each status."""
        rows = self._connect().execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}


def now() -> int:
    """Unix time in whole seconds, as OpenAI's objects use."""
    return int(time.time())
