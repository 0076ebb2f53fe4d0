"""Servers for the reliability suite: real Waitress processes on 127.0.0.1 with an API key and small limits.

The limits keep every request a fuzzer or a load test can make valid cheap on the CPU
(at most 64x64 pixels, 9 frames, 2 steps), so the suite stays bounded in time.
"""

from __future__ import annotations

import httpx2 as httpx
import pytest

from tests.server.conftest import ServerProcess, launched_together

API_KEY = "sk-reliability"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SMALL_LIMITS = ("server.max_frames=9", "server.max_steps=2", "server.max_pixels=4096", "server.max_images=2")


def keyed_server(tmp_path_factory, model: str, *extra: str) -> ServerProcess:
    """A keyed server for ``model`` (a conf/model name) with SMALL_LIMITS and the test faults (a failing prompt),
    not started yet."""
    return ServerProcess(tmp_path_factory.mktemp(model) / "out", *SMALL_LIMITS, *extra, model=model, faults=True,
                         env={"SGLD_API_KEY": API_KEY})


@pytest.fixture(scope="package")
def servers(tmp_path_factory, tiny_wan_folder):
    """The package's three servers, launched together when the first is asked for (a start is mostly a
    single-threaded import: side by side they take both cores); each fixture below waits for its own."""
    launched = {
        # tiny Wan text-to-video, queue bound 8
        "video": keyed_server(tmp_path_factory, "tiny_wan", "server.max_queue=8"),
        # tiny Qwen-Image text-to-image
        "image": keyed_server(tmp_path_factory, "tiny_qwen_image"),
        # tiny Qwen-Image-Edit, one image per request
        "edit": keyed_server(tmp_path_factory, "tiny_qwen_image_edit", "server.max_images=1"),
    }
    with launched_together(launched, timeout=240) as ready:
        yield ready


@pytest.fixture(scope="package")
def video_server(servers):
    """tiny Wan text-to-video, queue bound 8."""
    return servers("video")


@pytest.fixture(scope="package")
def image_server(servers):
    """tiny Qwen-Image text-to-image."""
    return servers("image")


@pytest.fixture(scope="package")
def edit_server(servers):
    """tiny Qwen-Image-Edit, one image per request."""
    return servers("edit")


@pytest.fixture
def http(video_server):
    """An httpx client with the key, based at the video server's root."""
    with httpx.Client(base_url=video_server.base, headers=AUTH, timeout=60) as client:
        yield client


def openai_client(srv: ServerProcess):
    """The real openai SDK pointed at ``srv`` with the key."""
    return srv.openai(API_KEY)


def assert_error(r: httpx.Response, status: int, param=None, code=None) -> dict:
    """``r`` is an OpenAI-shaped error with ``status`` (and ``param``/``code`` when given); its error object."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err
