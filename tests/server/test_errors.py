"""Every error is OpenAI's shape with the right status, decided before anything is queued."""

from __future__ import annotations

import httpx2 as httpx
import pytest


def assert_error(r: httpx.Response, status: int, param=None, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize(
    "body,param,fragment",
    [
        ({"prompt": "x", "size": "abc"}, "size", "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": "0x0"}, "size", "at least 1x1"),
        ({"prompt": "x", "size": "99999x99999"}, "size", "pixels"),
        ({"prompt": "x", "size": "65x64"}, "size", "multiple of 16"),
        ({"prompt": "x", "seconds": "-1"}, "seconds", "more than 0"),
        ({"prompt": "x", "seconds": "9999"}, "seconds", "at most"),
        ({"prompt": "x", "num_frames": 10}, "num_frames", "4k+1"),
        ({"prompt": "x", "num_frames": 100000}, "num_frames", "between"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "between"),
        ({"prompt": "x", "num_inference_steps": 10000}, "num_inference_steps", "between"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"size": "64x64"}, "prompt", "required"),
        ({"prompt": "x" * 20000}, "prompt", "limit"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": "x", "model": "sora-2"}, "model", "tiny-wan-t2v"),
        ({"prompt": "x", "seed": "abc"}, "seed", "integer"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_video_fields(server, body, param, fragment):
    err = assert_error(httpx.post(server.url + "/videos", json=body), 400, param=param)
    assert fragment in err["message"]


def test_input_reference_on_text_to_video(server):
    files = {"input_reference": ("ref.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    err = assert_error(httpx.post(server.url + "/videos", data={"prompt": "x"}, files=files), 400, param="input_reference")
    assert "text-to-video" in err["message"]


def test_transport_level_errors(server):
    assert_error(httpx.post(server.url + "/videos", content=b"prompt=x", headers={"Content-Type": "text/plain"}), 415)
    assert_error(httpx.post(server.url + "/videos", content=b"{bad json", headers={"Content-Type": "application/json"}), 400, code="invalid_json")
    assert_error(httpx.post(server.url + "/videos", json=["not", "an", "object"]), 400)
    assert_error(httpx.post(server.url + "/videos", content=b"x" * (21 * 1024 * 1024), headers={"Content-Type": "application/json"}), 413)
    assert_error(httpx.get(server.url + "/videos/video_doesnotexist"), 404, code="video_not_found")
    assert_error(httpx.get(server.url + "/videos/..%2F..%2Fetc%2Fpasswd/content"), 404)
    assert_error(httpx.get(server.url + "/nothing/here"), 404)
    r = httpx.put(server.url + "/videos")
    assert_error(r, 405)
    assert "POST" in r.headers["Allow"]
    assert_error(httpx.get(server.url + "/videos", params={"limit": "abc"}), 400, param="limit")
    assert_error(httpx.get(server.url + "/videos", params={"after": "video_nope"}), 400, param="after")


def test_duplicated_form_fields(server):
    r = httpx.post(server.url + "/videos", data={"prompt": ["a", "b"]}, files={"x": ("", b"")}, )
    assert r.status_code == 400


def test_unicode_prompt_works(client):
    video = client.videos.create_and_poll(prompt="狐狸在雪中奔跑 🦊", size="64x64", extra_body={"num_frames": 1, "num_inference_steps": 1}, poll_interval_ms=100)
    assert video.status == "completed" and video.prompt == "狐狸在雪中奔跑 🦊"


def test_image_endpoints_on_a_video_model(server):
    r = httpx.post(server.url + "/images/generations", json={"prompt": "x", "response_format": "url"})
    err = assert_error(r, 400, param="response_format")
    assert r.json()["detail"] == "response_format=url is not supported" == err["message"]
    err = assert_error(httpx.post(server.url + "/images/generations", json={"prompt": "x"}), 400, param="model")
    assert "use /v1/videos" in err["message"]
