"""A server whose model runs on 2 ranks (gloo on CPU): same video as one process; a dead rank is reported, not hung on."""

from __future__ import annotations

import time

import httpx2 as httpx
import numpy as np
import pytest

from tests.conftest import read_mp4, run_cli
from tests.server.conftest import ServerProcess, wait_for
from tests.support.faults import RANK_FAULT


@pytest.fixture(scope="module")
def two_rank_server(tmp_path_factory, tiny_wan_folder):
    srv = ServerProcess(tmp_path_factory.mktemp("ranks") / "out", "parallel.num_gpus=2", "parallel.ulysses_degree=2",
                        model="tiny_wan", faults=True)
    srv.ready_seconds = srv.start(timeout=180)
    yield srv
    srv.stop()


def test_two_rank_server_makes_the_single_process_video(two_rank_server, tmp_path):
    client = two_rank_server.openai()
    video = client.videos.create(prompt="a red fox", size="64x64",
                                 extra_body={"num_inference_steps": 2, "seed": 5, "num_frames": 9})
    video = wait_for(client, video.id, timeout=120)
    assert video.status == "completed", video.error
    served = tmp_path / "served.mp4"
    served.write_bytes(client.videos.download_content(video_id=video.id).read())

    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a red fox", "--height", "64",
                   "--width", "64", "--num-frames", "9", "--num-inference-steps", "2", "--seed", "5",
                   "--output-path", str(tmp_path), "--output-file-name", "single.mp4")
    assert proc.returncode == 0, proc.stderr
    _, a = read_mp4(served)
    _, b = read_mp4(tmp_path / "single.mp4")
    assert len(a) == len(b) == 9
    assert np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)).max() <= 2


def test_a_dead_rank_fails_the_job_and_health_says_so(two_rank_server):
    """Runs last in this module: it ends the server's rank group."""
    client = two_rank_server.openai()
    video = client.videos.create(prompt=f"a cat {RANK_FAULT}", size="64x64",
                                 extra_body={"num_inference_steps": 2})
    start = time.perf_counter()
    video = wait_for(client, video.id, timeout=120)
    assert video.status == "failed"
    assert "rank 1" in video.error.message and "injected test failure" in video.error.message
    assert time.perf_counter() - start < 60  # the group is torn down, not waited out
    health = httpx.get(two_rank_server.base + "/health", timeout=5)
    assert health.status_code == 503 and "rank 1" in health.json()["message"]
    # the server keeps answering (with a clear error) instead of hanging
    err = httpx.post(two_rank_server.url + "/videos", json={"prompt": "x", "size": "64x64"}, timeout=5)
    assert err.status_code == 503 and "rank group failed" in err.json()["error"]["message"]
