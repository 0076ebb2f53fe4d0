"""The bad-input matrix: every case is a 4xx in OpenAI's shape naming the field, decided before anything is queued.

None may produce a 5xx, hang, or write outside the output directory.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.reliability.conftest import AUTH, assert_error, openai_client
from tests.server.conftest import wait_for


@pytest.mark.parametrize(
    "body,param,fragment",
    [
        ({"prompt": "x", "size": "abc"}, "size", "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": "0x0"}, "size", "at least 1x1"),
        ({"prompt": "x", "size": "99999x99999"}, "size", "pixels"),
        ({"prompt": "x", "size": "50x48"}, "size", "multiple of 16"),
        ({"prompt": "x", "seconds": "-1"}, "seconds", "more than 0"),
        ({"prompt": "x", "seconds": "9999"}, "seconds", "at most"),
        ({"prompt": "x", "seconds": "NaN"}, "seconds", "at most"),
        ({"prompt": "x", "num_frames": 4}, "num_frames", "4k+1"),
        ({"prompt": "x", "num_frames": -1}, "num_frames", "between"),
        ({"prompt": "x", "num_frames": 100000}, "num_frames", "between"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "between"),
        ({"prompt": "x", "num_inference_steps": 10000}, "num_inference_steps", "between"),
        ({"prompt": "x", "num_inference_steps": 1.5}, "num_inference_steps", "integer"),
        ({"prompt": "x", "num_inference_steps": ""}, "num_inference_steps", "integer"),
        ({"prompt": "x", "guidance_scale": "inf"}, "guidance_scale", "at most"),
        ({"prompt": "x", "fps": True}, "fps", "integer"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"size": "64x64"}, "prompt", "required"),
        ({"prompt": "x" * (1024 * 1024)}, "prompt", "limit"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": ["a"]}, "prompt", "string"),
        ({"prompt": "x", "model": 7}, "model", "string"),
        ({"prompt": "x", "seed": [1, 2]}, "seed", "one per output"),
        ({"prompt": "x", "width": 0}, "width", "between"),
        ({"prompt": "x", "output_quality": "best"}, "output_quality", "one of"),
        ({"prompt": "x", "true_cfg_scale": 3}, "true_cfg_scale", "true-CFG models"),
        ({"prompt": "x", "frame_interpolation_exp": 9}, "frame_interpolation_exp", "between"),
        ({"prompt": "x", "upscaling_model_path": "org/x"}, "upscaling_model_path", "not supported yet"),
        ({"prompt": "x", "enable_teacache": "maybe"}, "enable_teacache", "true or false"),
        ({"prompt": "x", "cache_dit_params": [1]}, "cache_dit_params", "JSON object"),
        ({"prompt": "x", "perf_dump_path": "/etc/x"}, "perf_dump_path", "path on the server"),
        ({"prompt": "x", "extra_body": "[1]"}, "extra_body", "JSON object"),
        ({"prompt": "x", "seed": "abc"}, "seed", "integer"),
        ({"prompt": "x", "seed": 2**64}, "seed", "between"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
        ({"prompt": "x", "input_reference": "../../etc/passwd"}, "input_reference", "not supported for T2V models"),
    ],
)
def test_bad_video_fields(http, body, param, fragment):
    err = assert_error(http.post("/v1/videos", json=body), 400, param=param)
    assert fragment in err["message"]


def test_transport_level_errors(http, video_server):
    assert_error(http.post("/v1/videos", content=b"prompt=x", headers={"Content-Type": "text/plain"}), 415)
    assert_error(http.post("/v1/videos", content=b"prompt=x", headers={"Content-Type": ""}), 415)
    assert_error(http.post("/v1/videos", content=b"{bad json", headers={"Content-Type": "application/json"}), 400, code="invalid_json")
    assert_error(http.post("/v1/videos", content=b'{"prompt": "\xff"}', headers={"Content-Type": "application/json"}), 400)
    assert_error(http.post("/v1/videos", json=["not", "an", "object"]), 400)
    assert_error(http.post("/v1/videos", content=b"null", headers={"Content-Type": "application/json"}), 400, code="invalid_json")
    big = b'{"prompt": "' + b"x" * (21 * 1024 * 1024) + b'"}'
    assert_error(http.post("/v1/videos", content=big, headers={"Content-Type": "application/json"}), 413)
    assert_error(http.get("/v1/videos/video_doesnotexist"), 404, code="video_not_found")
    assert_error(http.get("/nothing/here"), 404)
    r = http.put("/v1/videos")
    assert_error(r, 405)
    assert "POST" in r.headers["Allow"]
    assert_error(http.get("/v1/videos", params={"limit": "abc"}), 400, param="limit")
    assert_error(http.get("/v1/videos", params={"limit": "0"}), 400, param="limit")
    for cursor in ("video_nope", ""):  # an unknown cursor: nothing comes after it (SGLang's empty page)
        page = http.get("/v1/videos", params={"after": cursor})
        assert page.status_code == 200 and page.json()["data"] == [] and not page.json()["has_more"], page.text
    assert_error(http.get("/v1/videos", params={"lmit": "5"}), 400, param="lmit")


def test_malformed_bodies_that_used_to_be_500s(http, edit_server):
    """A lone surrogate (the store could not encode it), nesting past the parser's recursion limit and a form part
    without a name (werkzeug keys it None) are each a 400 in OpenAI's shape, with SGLang's ``detail``."""
    import httpx2 as httpx

    for body in (b'{"prompt": "a fox \\ud800 in snow", "size": "64x64"}', b'{"prompt": "x", "loras": [{"name": "\\udfff"}]}'):
        r = http.post("/v1/videos", content=body, headers={"Content-Type": "application/json"})
        err = assert_error(r, 400)
        assert "surrogate" in err["message"] and r.json()["detail"] == err["message"]
    deep = b'{"prompt": "x", "seed": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "nested" in assert_error(http.post("/v1/videos", content=deep, headers={"Content-Type": "application/json"}),
                                    400, code="invalid_json")["message"]
    nameless = (b'--B\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n'
                b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--B--\r\n')
    for url in (http.base_url.join("/v1/videos"), edit_server.url + "/images/edits"):
        r = httpx.post(str(url), content=nameless, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=B"})
        assert "no name" in assert_error(r, 400, code="invalid_form")["message"]
    unnamed_file = b'--B\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nxx\r\n--B--\r\n'
    r = httpx.post(edit_server.url + "/images/edits", content=unnamed_file,
                   headers={**AUTH, "Content-Type": "multipart/form-data; boundary=B"})
    assert_error(r, 400, code="invalid_form")


def test_errors_carry_sglangs_detail_and_delete_its_status(http):
    r = http.get("/v1/videos/video_nope")
    assert r.json()["detail"] == assert_error(r, 404)["message"]
    job = http.post("/v1/videos", json={"prompt": "x", "size": "64x64", "num_frames": 1, "num_inference_steps": 1}).json()
    deleted = http.delete(f"/v1/videos/{job['id']}").json()
    assert deleted == {"id": job["id"], "object": "video.deleted", "deleted": True, "status": "deleted"}


def test_duplicated_fields(http):
    err = assert_error(http.post("/v1/videos", data={"prompt": ["a", "b"]}, files={"x": ("", b"")}), 400)
    assert err["param"] in ("prompt", "x")
    err = assert_error(http.post("/v1/videos", data={"prompt": ["a", "b"]}), 400, param="prompt")
    assert "2 times" in err["message"]
    # JSON with a repeated key: the parser keeps the last one, as every JSON library does.
    r = http.post("/v1/videos", content=b'{"prompt": "a", "prompt": "b", "size": "abc"}', headers={"Content-Type": "application/json"})
    assert_error(r, 400, param="size")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "video_%2e%2e%2f%2e%2e%2fjobs.sqlite3",
                                  "%00", "video_" + "0" * 32])
def test_path_traversal_ids_are_404(http, video_server, name):
    for path in (f"/v1/videos/{name}", f"/v1/videos/{name}/content", f"/v1/videos/{name}/content?variant=thumbnail"):
        assert http.get(path).status_code == 404, path
    assert http.delete(f"/v1/videos/{name}").status_code in (404, 405)


def test_unicode_and_emoji_prompts_work(video_server):
    client = openai_client(video_server)
    prompt = "狐狸在雪中奔跑 🦊 \u200d e\u0301 \U0001F9D1\u200D\U0001F680"
    video = wait_for(client, client.videos.create(prompt=prompt, size="64x64",
                                                  extra_body={"num_frames": 1, "num_inference_steps": 1}).id)
    assert video.status == "completed" and video.prompt == prompt


def test_image_endpoints_on_a_video_model(http):
    r = http.post("/v1/images/generations", json={"prompt": "x", "response_format": "gif"})
    err = assert_error(r, 400, param="response_format")
    assert r.json()["detail"] == err["message"]
    assert "use /v1/videos" in assert_error(http.post("/v1/images/generations", json={"prompt": "x"}), 400, param="model")["message"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``x``height`` (a decompression bomb needs no pixel data to be refused)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _png(size=(56, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "files,param,fragment",
    [
        ({}, "image", "required"),
        ({"image": ("a.png", b"not an image at all", "image/png")}, "image", "not a readable"),
        ({"image": ("a.png", b"", "image/png")}, "image", "empty"),
        ({"image": ("a.png", _png()[:60], "image/png")}, "image", "not a readable"),
        ({"image": ("bomb.png", _png_header(100_000, 100_000), "image/png")}, "image", "limit"),
        ({"image": ("../../etc/passwd", _png(), "image/png"), "mask": ("m.png", _png(), "image/png")}, "mask", "masks"),
        ({"image[]": ("a.png", _png(), "image/png"), "image": ("b.png", _png(), "image/png")}, "image", "takes one"),
        ({"picture": ("a.png", _png(), "image/png")}, "picture", "unexpected file"),
    ],
)
def test_bad_edit_uploads(edit_server, files, param, fragment):
    import httpx2 as httpx

    before = sorted(p.name for p in (edit_server.output_dir / "files").iterdir())
    r = httpx.post(edit_server.url + "/images/edits", data={"prompt": "make it blue"}, files=files or None,
                   headers=AUTH, timeout=60)
    err = assert_error(r, 400, param=param)
    assert fragment in err["message"], err
    assert sorted(p.name for p in (edit_server.output_dir / "files").iterdir()) == before  # nothing written


def test_edit_upload_over_the_body_limit_is_413(edit_server):
    import httpx2 as httpx

    r = httpx.post(edit_server.url + "/images/edits", data={"prompt": "x"}, headers=AUTH, timeout=60,
                   files={"image": ("big.png", b"\0" * (50 * 1024 * 1024), "image/png")})
    assert "20 MB" in assert_error(r, 413)["message"]


def test_image_request_limits(image_server):
    import httpx2 as httpx

    post = lambda body: httpx.post(image_server.url + "/images/generations", json=body, headers=AUTH, timeout=60)  # noqa: E731
    assert_error(post({"prompt": "x", "n": 3}), 400, param="n")
    assert_error(post({"prompt": "x", "n": 0}), 400, param="n")
    assert_error(post({"prompt": "x", "size": "4096x4096"}), 400, param="size")
    assert_error(post({"prompt": "x", "output_format": "gif"}), 400, param="output_format")
    assert_error(post({"prompt": "x", "num_inference_steps": 3}), 400, param="num_inference_steps")
    assert_error(httpx.post(image_server.url + "/images/edits", data={"prompt": "x"}, headers=AUTH,
                            files={"image": ("a.png", _png(), "image/png")}), 400, param="model")
