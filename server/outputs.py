"""Where a server keeps job files: a local (or mounted) directory, or any fsspec location (``s3://``, ``gs://``).

The engine always writes to a local directory. With a local ``--output-path`` that directory is
``<output-path>/files`` and the files stay there. With an fsspec URL the engine writes to a local
staging directory and each finished job's files are published to ``<url>/files/``; ``/content``
streams them from there on any replica, ``DELETE`` and expiry remove them there. Input images a
request uploads go to the same place, so whichever replica runs the job can read them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import IO, Iterable


def is_url(location: str) -> bool:
    """Whether an output location is an fsspec URL rather than a local path."""
    return "://" in str(location)


class OutputFiles:
    """A server's job files: ``local`` is where the engine writes; ``remote`` (an fsspec URL) where they live."""

    def __init__(self, location: str, staging_root: Path):
        self.location = str(location)
        self.remote = is_url(self.location)
        if self.remote:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(self.location)
            self.root = root.rstrip("/") + "/files"
            self.fs.makedirs(self.root, exist_ok=True)
            digest = hashlib.sha256(self.location.encode()).hexdigest()[:12]
            self.local = Path(staging_root) / "staging" / digest  # this host's scratch space for the engine
        else:
            self.fs, self.root = None, None
            self.local = Path(self.location).expanduser().resolve() / "files"
        self.local.mkdir(parents=True, exist_ok=True)

    def _remote_path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def url(self, name: str) -> str:
        """Where the file ``name`` lives: a local path, or a URL under the remote location."""
        return f"{self.location.rstrip('/')}/files/{name}" if self.remote else str(self.local / name)

    def publish(self, names: Iterable[str]) -> None:
        """Move finished files from the local directory to where they live (nothing to do when local)."""
        if not self.remote:
            return
        for name in names:
            local = self.local / name
            self.fs.put_file(str(local), self._remote_path(name))
            local.unlink(missing_ok=True)

    def localize(self, location: str) -> str:
        """A local path for the file at ``location`` (an input another replica uploaded): downloaded when remote."""
        if not is_url(location):
            return location
        name = location.rsplit("/", 1)[-1]
        local = self.local / name
        if not local.is_file():
            self.fs.get_file(self._remote_path(name), str(local))
        return str(local)

    def open(self, name: str) -> IO[bytes]:
        """The file ``name`` for reading (streamed from the remote location)."""
        return self.fs.open(self._remote_path(name), "rb") if self.remote else open(self.local / name, "rb")

    def remove(self, prefix: str) -> None:
        """Remove every file of a job (names starting with ``prefix``), wherever it is."""
        for path in self.local.glob(f"{prefix}*"):
            if path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        if self.remote:
            for path in self.fs.glob(self._remote_path(f"{prefix}*")):
                self.fs.rm(path, recursive=True)

    def total_bytes(self) -> int:
        """Bytes of files kept."""
        if self.remote:
            return sum(info["size"] for info in self.fs.ls(self.root, detail=True) if info["type"] == "file")
        return sum(path.stat().st_size for path in self.local.iterdir() if path.is_file())
