"""Dynamic batching on real servers: concurrent requests share forwards, each output equal to its solo run."""

from __future__ import annotations

import base64
import io
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import read_mp4
from tests.server.conftest import ServerProcess, launched_together, wait_for

BATCHING = ("--max-batch-size", "4", "--batch-wait-ms", "300")
IMAGE_REQUESTS = [
    {"prompt": "a red fox in the snow", "seed": 1, "guidance_scale": 3.0},
    {"prompt": "a blue whale in a deep ocean with light rays", "seed": 7, "guidance_scale": 5.0},
    {"prompt": "city", "seed": 3, "guidance_scale": 4.0},
    {"prompt": "a lighthouse at dusk", "seed": 11, "guidance_scale": 6.0},
]


def histogram(srv: ServerProcess, name: str) -> tuple[float, float]:
    """(count, sum) of a histogram on the server's /metrics."""
    text = httpx.get(srv.base + "/metrics", timeout=10).text
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    return count, total


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_wan_folder):
    """This module's two servers, launched together when the first is asked for (a start is mostly a
    single-threaded import: side by side they take both cores): ``flux`` batches images (BATCHING), ``wan`` batches
    up to 3 videos arriving within 300 ms."""
    launched = {
        "flux": ServerProcess(tmp_path_factory.mktemp("batching-flux") / "out", *BATCHING, model="tiny-flux"),
        "wan": ServerProcess(tmp_path_factory.mktemp("batching-wan") / "out", "--max-batch-size", "3",
                             "--batch-wait-ms", "300"),
    }
    with launched_together(launched, timeout=120) as ready:
        yield ready


@pytest.fixture(scope="module")
def flux_server(servers):
    return servers("flux")


def generate(srv: ServerProcess, request: dict) -> np.ndarray:
    result = srv.openai().images.generate(prompt=request["prompt"], size="64x64", response_format="b64_json",
                                          output_format="png", extra_body={
        "seed": request["seed"], "guidance_scale": request["guidance_scale"], "num_inference_steps": 3})
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB")).astype(int)


def test_concurrent_image_requests_share_one_forward_and_equal_their_solo_runs(flux_server):
    with ThreadPoolExecutor(len(IMAGE_REQUESTS)) as pool:
        batched = list(pool.map(lambda r: generate(flux_server, r), IMAGE_REQUESTS))
    assert histogram(flux_server, "sgld_batch_size") == (1, 4)  # one forward batch held all four
    assert histogram(flux_server, "sgld_batch_wait_seconds")[0] == 1
    alone = [generate(flux_server, r) for r in IMAGE_REQUESTS]  # one at a time: batches of one
    assert histogram(flux_server, "sgld_batch_size") == (5, 8)
    for i, (a, b) in enumerate(zip(batched, alone)):
        assert np.abs(a - b).max() <= 2, f"request {i}: its batched image differs from its solo run"
    assert np.abs(alone[0] - alone[1]).max() > 20  # the requests really differ


def test_n_images_of_one_request_share_a_forward(flux_server):
    before = histogram(flux_server, "sgld_batch_size")
    result = flux_server.openai().images.generate(prompt="a red fox", size="64x64", n=3,
                                                  extra_body={"seed": 5, "num_inference_steps": 2})
    assert len(result.data) == 3
    count, total = histogram(flux_server, "sgld_batch_size")
    assert (count - before[0], total - before[1]) == (1, 3)


def test_cancelling_one_video_of_a_running_batch_leaves_the_others_equal_to_their_solo_runs(servers):
    srv = servers("wan")
    client = srv.openai()
    settings = {"num_inference_steps": 120}
    prompts = ["a red fox running", "a cat on a sofa", "waves on a beach"]
    with ThreadPoolExecutor(3) as pool:
        videos = list(pool.map(lambda i: client.videos.create(
            prompt=prompts[i], size="64x64", extra_body={**settings, "seed": 10 + i}), range(3)))
    doomed = videos[1].id
    deadline = time.time() + 60
    while client.videos.retrieve(doomed).progress < 5 and time.time() < deadline:
        time.sleep(0.05)
    assert client.videos.retrieve(doomed).status == "in_progress"
    client.videos.delete(doomed)
    finished = [wait_for(client, videos[i].id, timeout=120) for i in (0, 2)]
    assert [v.status for v in finished] == ["completed", "completed"]
    assert histogram(srv, "sgld_batch_size") == (1, 3)
    batched = [read_mp4(srv.output_dir / "files" / f"{v.id}.mp4")[1] for v in finished]
    for i, frames in zip((0, 2), batched):
        alone = wait_for(client, client.videos.create(prompt=prompts[i], size="64x64",
                                                     extra_body={**settings, "seed": 10 + i}).id, timeout=120)
        solo = read_mp4(srv.output_dir / "files" / f"{alone.id}.mp4")[1]
        # Raw frames agree within 1/255 (tests/test_batching.py); H.264 encodes such frames slightly differently.
        assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, solo)]) < 1.0
