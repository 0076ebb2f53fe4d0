"""A private PostgreSQL server for tests: Debian's ``postgresql`` binaries, a temp data dir, 127.0.0.1 only.

Started as the ``postgres`` user (the tests run as root; initdb refuses root). When it cannot
start, the error says why: PostgreSQL tests fail, they never skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql); "
                           "the PostgreSQL tests need a real server")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``start()`` a throwaway cluster; ``url`` to connect; ``stop()``/``start()`` to take it down and back."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="sgld-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_binary("initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.data), "--no-sync")

    @property
    def url(self) -> str:
        """The server's database URL (no password: trust authentication on 127.0.0.1)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = (["runuser", "-u", "postgres", "--"] if self._as_postgres else []) + list(argv)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are cut)."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs and remove its files."""
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
