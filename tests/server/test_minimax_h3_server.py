"""MiniMax-H3 behind /v1/videos: the last keyframe (``last_image``) and the reference images
(``reference_images`` / ``reference_images[]``) as uploads or URLs, each workflow served by the partition the
server loaded (``--workflows``) and the others refused with the flag that loads them."""

from __future__ import annotations

import base64
import io

import httpx2 as httpx
import pytest

from tests.conftest import read_streams
from tests.server.conftest import ServerProcess, wait_for

FRAMES = 124  # 5 s at 24 fps: MiniMax-H3's shortest video


def _png(width: int, height: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _server(tmp_path_factory, name: str, *flags: str):
    srv = ServerProcess(tmp_path_factory.mktemp(name) / "out", "--num-inference-steps", "3", *flags,
                        model="tiny-minimax-h3")
    srv.start(timeout=240)
    return srv


@pytest.fixture(scope="module")
def keyframe_server(tmp_path_factory, sgld_home):
    """The default server: t2va and fl2va (transformer/ only)."""
    srv = _server(tmp_path_factory, "h3-keyframes")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory, sgld_home):
    srv = _server(tmp_path_factory, "h3-references", "--workflows", "ref2va")
    yield srv
    srv.stop()


def _finished(srv, response) -> bytes:
    assert response.status_code == 200, response.text
    done = wait_for(srv.openai(), response.json()["id"], timeout=180)
    assert done.status == "completed", done.error
    content = httpx.get(f"{srv.url}/videos/{done.id}/content", timeout=30)
    assert content.status_code == 200
    found = read_streams(content.content)
    assert found["video"]["frames"] == FRAMES and found["audio"]["channels"] == 2
    assert not list(srv.output_dir.rglob(f"{done.id}_input*"))  # the uploads go with the job
    return content.content


def test_first_and_last_keyframes_are_uploads(keyframe_server):
    files = {"input_reference": ("first.png", _png(40, 72, 1), "image/png"),
             "last_image": ("last.png", _png(40, 72, 2), "image/png")}
    response = httpx.post(f"{keyframe_server.url}/videos", data={"prompt": "a fox turns around", "seed": "3"},
                          files=files, timeout=30)
    body = response.json()
    assert body["size"] == "32x64" and body["has_audio"] is True  # the canvas follows the first keyframe (9:16)
    _finished(keyframe_server, response)


def test_a_keyframe_server_refuses_references_naming_the_flag(keyframe_server):
    response = httpx.post(f"{keyframe_server.url}/videos", data={"prompt": "x"},
                          files={"reference_images[]": ("ref.png", _png(48, 48, 4), "image/png")}, timeout=30)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "reference_images"
    assert "--workflows t2va fl2va ref2va" in error["message"]
    assert not list(keyframe_server.output_dir.rglob("*_input*"))  # nothing kept of a refused request


def test_reference_images_as_uploads_and_urls(reference_server):
    upload = httpx.post(f"{reference_server.url}/videos", data={"prompt": "the two of them dance", "seed": "5"},
                        files=[("reference_images[]", ("a.png", _png(48, 48, 4), "image/png")),
                               ("reference_images[]", ("b.png", _png(64, 32, 5), "image/png"))], timeout=30)
    first = _finished(reference_server, upload)
    data_url = "data:image/png;base64," + base64.b64encode(_png(48, 48, 6)).decode()
    by_url = httpx.post(f"{reference_server.url}/videos", timeout=30,
                        json={"prompt": "the two of them dance", "seed": 5, "reference_images": [data_url]})
    assert _finished(reference_server, by_url) != first  # other references, another video


@pytest.mark.parametrize("fields, param, message", [
    ({"reference_images": ["data:image/png;base64,AAAA"] * 10}, "reference_images",
     "10 given; 'tiny-minimax-h3' takes at most 9 reference images"),
    ({"last_image": "data:image/png;base64," + base64.b64encode(_png(40, 72, 2)).decode()}, "last_image",
     "--workflows fl2va ref2va"),
    ({"reference_images": "not a url"}, "reference_images", "'not a url': only http and https URLs"),
])
def test_bad_condition_images_are_refused_before_queueing(reference_server, fields, param, message):
    response = httpx.post(f"{reference_server.url}/videos", json={"prompt": "x", **fields}, timeout=30)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and message in error["message"], error


def test_openapi_describes_the_condition_images(keyframe_server):
    schemas = httpx.get(keyframe_server.base + "/openapi.json", timeout=10).json()["components"]["schemas"]
    assert schemas["VideoFromImage"]["properties"]["reference_images"]["maxItems"] == 9
    form = schemas["VideoFromImageForm"]["properties"]
    assert form["last_image"]["format"] == "binary" and form["reference_images[]"]["items"]["format"] == "binary"
