"""/v1/videos with an image-to-video model: the openai SDK's ``input_reference`` upload is the first frame."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.conftest import read_mp4
from tests.server.conftest import ServerProcess, launched_together


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """This module's two servers (Wan2.1 I2V, HunyuanVideo-1.5 I2V), launched together when the first is asked for
    (a start is mostly a single-threaded import: side by side they take both cores)."""
    launched = {model: ServerProcess(tmp_path_factory.mktemp(name) / "out", model=model)
                for name, model in (("i2v", "tiny-wan21-i2v"), ("hv15", "tiny-hunyuan15-i2v"))}
    with launched_together(launched, timeout=240) as ready:
        yield ready


@pytest.fixture(scope="module")
def i2v_server(servers):
    return servers("tiny-wan21-i2v")


def test_input_reference_makes_the_first_frame(i2v_server, input_png, tmp_path):
    client = i2v_server.openai()
    video = client.videos.create_and_poll(
        prompt="a red fox running through snow", size="64x64", input_reference=("first.png", input_png.read_bytes(), "image/png"),
        extra_body={"num_frames": 5, "num_inference_steps": 2, "seed": 3}, poll_interval_ms=100,
    )
    assert video.status == "completed", video.error
    path = tmp_path / "out.mp4"
    path.write_bytes(client.videos.download_content(video_id=video.id).read())
    meta, frames = read_mp4(path)
    assert meta["size"] == (64, 64) and len(frames) == 5
    # The upload is kept only while its job runs.
    assert not list(i2v_server.output_dir.rglob("*_input.png"))


def test_missing_or_bad_input_reference_is_a_400_naming_it(i2v_server):
    client = i2v_server.openai()
    with pytest.raises(openai.BadRequestError) as missing:
        client.videos.create(prompt="a fox", size="64x64")
    assert missing.value.body["param"] == "input_reference" and "required" in missing.value.body["message"]
    r = httpx.post(i2v_server.url + "/videos", data={"prompt": "a fox", "input_reference": "/etc/passwd"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_reference"
    r = httpx.post(i2v_server.url + "/videos", data={"prompt": "a fox"},
                   files={"input_reference": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_reference"
    assert not list(i2v_server.output_dir.rglob("*_input.png"))


def test_openapi_describes_the_upload(i2v_server):
    spec = httpx.get(i2v_server.base + "/openapi.json").json()
    body = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json", "multipart/form-data"]  # JSON names the first frame by URL (SGLang)
    assert body["application/json"]["schema"]["$ref"].endswith("/VideoFromImage")
    form = spec["components"]["schemas"]["VideoFromImageForm"]
    assert form["properties"]["input_reference"]["format"] == "binary"
    assert "input_reference" in spec["components"]["schemas"]["VideoFromImage"]["properties"]
    assert "last_image" not in form["properties"] and "reference_images" not in form["properties"]  # MiniMax-H3's
    refused = httpx.post(i2v_server.url + "/videos", json={"prompt": "x", "reference_images": ["https://a.example/x.png"]})
    assert refused.status_code == 400 and "takes no reference images" in refused.json()["error"]["message"]


def test_hunyuan15_video_takes_its_size_from_the_first_frame(servers, input_png, tmp_path):
    srv = servers("tiny-hunyuan15-i2v")
    info = httpx.get(srv.base + "/playground/info", timeout=10).json()
    assert info["needs_image"] and info["defaults"]["width"] is None  # the page shows "from input"
    client = srv.openai()
    video = client.videos.create_and_poll(
        prompt="a red fox", input_reference=("first.png", input_png.read_bytes(), "image/png"),
        extra_body={"num_frames": 5, "num_inference_steps": 2, "seed": 3}, poll_interval_ms=100,
    )
    # The 56x40 image's nearest bucket of the tiny model (64-pixel side): 64 wide, 48 high.
    assert video.status == "completed" and video.size == "64x48", (video.status, video.size, video.error)
    path = tmp_path / "hv15.mp4"
    path.write_bytes(client.videos.download_content(video_id=video.id).read())
    meta, frames = read_mp4(path)
    assert meta["size"] == (64, 48) and len(frames) == 5
