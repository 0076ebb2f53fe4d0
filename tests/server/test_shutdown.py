"""SIGTERM ends a server started the way a script starts it: in the background, with SIGINT ignored.

A shell runs a background job with SIGINT set to SIG_IGN, and the process inherits that; nothing
in the shutdown may rely on SIGINT. Each server here is idle: it must exit promptly with status 0,
its ranks or engine workers with it, and free its port. (A busy server's drain is covered by
``test_replicas``.)
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.server.conftest import ServerProcess


def ignores_sigint(pid: int) -> bool:
    """Whether the process's SIGINT disposition is SIG_IGN (its SigIgn mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError("no SigIgn line")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


LAYOUTS = {"one-process": (), "two-ranks": ("--num-gpus", "2", "--ulysses-degree", "2"),
           "two-engine-workers": ("--num-gpus", "2", "--dp-size", "2")}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_wan_folder):
    """One server of each layout, all launched when the first is asked for (their starts overlap on both cores);
    each test ends its own, and any left are killed at the end."""
    launched = {name: ServerProcess(tmp_path_factory.mktemp(name) / "out", *extra, ignore_sigint=True)
                for name, extra in LAYOUTS.items()}
    try:
        for srv in launched.values():
            srv.launch()
        yield launched
    finally:
        for srv in launched.values():
            srv.kill()


@pytest.mark.parametrize("layout, bound_s", [
    pytest.param("one-process", 10, id="one-process"),
    pytest.param("two-ranks", 30, id="two-ranks"),
    pytest.param("two-engine-workers", 15, id="two-engine-workers"),
])
def test_sigterm_ends_an_idle_server_that_ignores_sigint(servers, layout, bound_s):
    srv = servers[layout]
    try:
        srv.wait_ready(timeout=180)
        assert ignores_sigint(srv.proc.pid)  # as under `cmd &` in a script
        children = psutil.Process(srv.proc.pid).children(recursive=True)  # the ranks, when there are some
        start = time.perf_counter()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(bound_s) == 0, srv.log.read_text()[-3000:]
        seconds = time.perf_counter() - start
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert port_is_free(srv.port)
        log_text = srv.log.read_text()
        assert "SIGTERM: draining" in log_text and "server stopped" in log_text
        print(f"exited {seconds:.1f} s after SIGTERM")
    finally:
        srv.kill()
