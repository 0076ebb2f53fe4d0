"""A real sgld server (Waitress, tiny model) in a subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx2 as httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1 not handed out before in this test run: servers built together and started one by
    one must not share one (the kernel may offer a port again once its probe socket closes; a second server on it
    then fails to bind while the first answers its health check, and both write one log)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


@contextmanager
def launched_together(servers: dict, timeout: float | None = None) -> Iterator:
    """Launch every server of ``servers`` (a dict by name) side by side, and stop each at the end. Yields ``servers``,
    or with ``timeout`` a function giving the server of a name once it is ready."""
    try:
        for srv in servers.values():
            srv.launch()
        if timeout is None:
            yield servers
        else:
            def ready(name: str) -> "ServerProcess":
                servers[name].wait_ready(timeout)
                return servers[name]

            yield ready
    finally:
        for srv in servers.values():
            srv.stop()


def start_together(*servers: "ServerProcess", timeout: float = 120) -> None:
    """Launch every server, then wait for each to be ready (see ``ServerProcess.launch``)."""
    for srv in servers:
        srv.launch()
    for srv in servers:
        srv.wait_ready(timeout)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ServerProcess:
    """``sgl-diffusion serve`` in a subprocess; ``url`` is its /v1 base."""

    def __init__(self, output_dir: Path, *extra: str, env: dict | None = None, model: str = "tiny-wan-t2v",
                 hydra: bool = False, faults: bool = False, ignore_sigint: bool = False):
        self.output_dir = output_dir
        self.model = model
        self.extra = extra
        # hydra=True: ``python -m server model=NAME key=value...`` (limits that have no CLI flag).
        # faults=True: the same door with test prompts that fail a job or kill a rank (tests/support/faults.py).
        self.hydra = hydra or faults
        self.module = "tests.support.fault_server" if faults else "server"
        # ignore_sigint=True: started as a shell script's background job is (bash sets SIGINT to SIG_IGN, inherited).
        self.ignore_sigint = ignore_sigint
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = output_dir.parent / f"server-{self.port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def start(self, timeout: float = 120) -> float:
        """Start and wait for /health 200; returns seconds to ready."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (``wait_ready`` waits): servers launched together import and load
        side by side, on both cores, instead of one after another (a start is mostly a single-threaded import)."""
        self._launched, self._ready_s = time.perf_counter(), None
        if self.hydra:
            command = ["-m", self.module, f"model={self.model}", f"server.port={self.port}", f"output.path={self.output_dir}",
                       f"hydra.run.dir={self.output_dir.parent / 'hydra'}", *self.extra]
        else:
            command = ["-m", "sgld.cli", "serve", "--model-path", self.model, "--port", str(self.port),
                       "--output-path", str(self.output_dir), *self.extra]
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            cwd=REPO, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint if self.ignore_sigint else None,
        )

    def wait_ready(self, timeout: float = 120) -> float:
        """Wait for a launched server's /health 200 (at once if it was seen before); returns seconds from its launch
        to ready."""
        if self._ready_s is not None:
            return self._ready_s
        start = self._launched
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200 and self.proc.poll() is None:
                    self._ready_s = time.perf_counter() - start
                    return self._ready_s
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def openai(self, api_key: str = "sk-anything"):
        """The real openai SDK pointed at this server (no retries; a bounded request timeout)."""
        from openai import OpenAI

        return OpenAI(api_key=api_key, base_url=self.url, max_retries=0, timeout=120)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="package")
def server(tmp_path_factory, tiny_wan_folder):
    srv = ServerProcess(tmp_path_factory.mktemp("server") / "out")
    srv.ready_seconds = srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return server.openai()


def wait_for(client, video_id: str, timeout: float = 60):
    """Poll until the job ends; its final state."""
    end = time.time() + timeout
    while time.time() < end:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        time.sleep(0.1)
    raise TimeoutError(video_id)
