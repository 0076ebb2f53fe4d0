"""Image jobs outlive no client: an abandoned request cancels its job, a restart does not run jobs whose request died
with the server, and image files follow a retention (real Waitress servers, tiny Qwen-Image)."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx2 as httpx
import pytest

from tests.server.conftest import ServerProcess, launched_together

# Slow enough on a CPU to be running when its client gives up.
LONG = {"prompt": "a long one", "size": "512x512", "num_inference_steps": 200, "response_format": "b64_json"}


def image_jobs(srv: ServerProcess) -> list[tuple[str, str]]:
    """(id, status) of every image job in the server's SQLite store."""
    with sqlite3.connect(srv.output_dir / "jobs.sqlite3") as conn:
        return conn.execute("SELECT id, status FROM jobs WHERE kind = 'image' ORDER BY seq").fetchall()


def wait_until(condition, timeout: float = 60, message: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(message)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """This module's three tiny Qwen-Image servers, each on its own output folder and store, launched together when
    the first is asked for (a start is mostly a single-threaded import: side by side they take both cores):
    ``shared`` for the cancellation test, ``restart`` to be killed and started again, ``retention`` with a 2 s
    image retention."""
    launched = {
        "shared": ServerProcess(tmp_path_factory.mktemp("image-jobs") / "out", model="tiny-qwen-image"),
        "restart": ServerProcess(tmp_path_factory.mktemp("image-restart") / "out", model="tiny-qwen-image"),
        "retention": ServerProcess(tmp_path_factory.mktemp("image-retention") / "out", "server.image_retention_s=2",
                                   "server.lease_s=3", model="tiny_qwen_image", hydra=True),
    }
    with launched_together(launched, timeout=120) as ready:
        yield ready


@pytest.fixture(scope="module")
def image_server(servers):
    return servers("shared")


def test_an_abandoned_image_request_cancels_its_job(image_server):
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(image_server.url + "/images/generations", json=LONG, timeout=httpx.Timeout(60, read=2))
    job_id = image_jobs(image_server)[-1][0]
    wait_until(lambda: not any(i == job_id for i, _ in image_jobs(image_server)), 30, "the job was not cancelled")
    assert f"image job {job_id} cancelled: its client went away" in image_server.log.read_text()
    start = time.perf_counter()  # the worker is free again: a short request runs now, not after 200 steps
    r = httpx.post(image_server.url + "/images/generations", timeout=120,
                   json={"prompt": "a short one", "size": "32x32", "num_inference_steps": 1})
    assert r.status_code == 200 and time.perf_counter() - start < 20, r.text
    assert not list((image_server.output_dir / "files").glob(f"{job_id}*"))


def test_image_jobs_whose_request_died_with_the_server_are_not_run_after_a_restart(servers):
    srv = servers("restart")
    def request() -> None:
        try:
            httpx.post(srv.url + "/images/generations", json=LONG, timeout=300)
        except httpx.HTTPError:  # the server is killed under it
            pass

    for _ in range(2):  # one runs, one waits in the queue
        threading.Thread(target=request, daemon=True).start()
    def under_way() -> bool:  # both accepted, one (or both, batched together) running
        states = [s for _, s in image_jobs(srv)]
        return len(states) == 2 and "in_progress" in states and set(states) <= {"queued", "in_progress"}

    wait_until(under_way, 60, "jobs not under way")
    orphans = [i for i, _ in image_jobs(srv)]
    srv.kill()
    srv.start()
    log = srv.log.read_text()
    for job_id in orphans:
        assert f"image job {job_id} (request_id=" in log and "nobody can receive it" in log
    assert image_jobs(srv) == []  # neither is run again
    assert not any("running it again" in line for line in log.splitlines())
    r = httpx.post(srv.url + "/images/generations", timeout=120,
                   json={"prompt": "after the restart", "size": "32x32", "num_inference_steps": 1})
    assert r.status_code == 200, r.text


def test_image_files_follow_a_retention(servers):
    srv = servers("retention")
    body = httpx.post(srv.url + "/images/generations", timeout=120,
                      json={"prompt": "a cat", "size": "32x32", "num_inference_steps": 1}).json()
    job = httpx.get(f"{srv.url}/images/{body['id']}", timeout=10).json()
    assert job["expires_at"] == job["completed_at"] + 2
    assert httpx.get(srv.base + body["data"][0]["url"], timeout=10).status_code == 200
    wait_until(lambda: httpx.get(f"{srv.url}/images/{body['id']}", timeout=10).json()["status"] == "expired", 30,
               "the image did not expire")
    gone = httpx.get(srv.base + body["data"][0]["url"], timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_expired"
    assert not list((srv.output_dir / "files").glob(f"{body['id']}*"))
