"""Security: the API key, files only from the output directory, no pickle weights, loopback by default,
body limits, and no prompts in /metrics."""

from __future__ import annotations

import pickle
import shutil
import socket
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.reliability.conftest import API_KEY, AUTH, assert_error, openai_client
from tests.server.conftest import wait_for

API_ROUTES = [("GET", "/v1/models"), ("GET", "/v1/videos"), ("POST", "/v1/videos"), ("GET", "/v1/videos/video_x"),
              ("DELETE", "/v1/videos/video_x"), ("GET", "/v1/videos/video_x/content"), ("POST", "/v1/images/generations"),
              ("POST", "/v1/images/edits"), ("GET", "/metrics")]


@pytest.mark.parametrize("method,path", API_ROUTES)
def test_every_api_route_needs_the_key(video_server, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-reliability"}, {"Authorization": "Basic c2stcmVsaWFiaWxpdHk="}):
        r = httpx.request(method, video_server.base + path, headers=headers, json={"prompt": "x"})
        assert_error(r, 401, code="invalid_api_key")


def test_public_paths_need_no_key(video_server):
    for path in ("/health", "/openapi.json", "/", "/playground", "/playground/app.js", "/playground/info"):
        assert httpx.get(video_server.base + path).status_code == 200, path


def test_the_bearer_scheme_is_case_insensitive(video_server):
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = httpx.get(video_server.base + "/v1/models", headers={"Authorization": f"{scheme} {API_KEY}"})
        assert r.status_code == 200, (scheme, r.text)


def test_the_playground_data_needs_the_key_where_the_api_does(video_server):
    """/playground/info stays public, but without the key it says only that a key is needed: the adapters and
    defaults it otherwise lists are the API's data."""
    assert httpx.get(video_server.base + "/playground/info").json() == {"api_key_required": True}
    wrong = httpx.get(video_server.base + "/playground/info", headers={"Authorization": "Bearer wrong"}).json()
    assert wrong == {"api_key_required": True}
    full = httpx.get(video_server.base + "/playground/info", headers={"Authorization": f"bearer {API_KEY}"}).json()
    assert full["api_key_required"] is True and full["model"] == "tiny-wan-t2v" and "defaults" in full


def test_the_playground_asks_for_the_key_then_loads(video_server, browser):
    page = browser.new_page()
    page.goto(video_server.base + "/playground")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('API key')")
    assert page.get_by_label("API key").is_visible()
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("API key").press("Enter")  # commits the value: the page asks again with it
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-wan-t2v')")
    page.close()


def test_no_file_outside_the_output_dir_is_served(video_server):
    secret = video_server.output_dir.parent / "secret.txt"
    secret.write_text("do not serve")
    probes = ["/playground/..%2F..%2Fserver%2Fjobs.py", "/playground/../../server/jobs.py", "/playground/..%2Fsecret.txt",
              "/v1/videos/..%2Fsecret.txt/content", "/v1/videos/video_x%2F..%2F..%2Fsecret.txt/content", "/..%2Fsecret.txt",
              "/v1/videos/%2E%2E/content?variant=thumbnail"]
    for path in probes:
        r = httpx.get(video_server.base + path, headers=AUTH)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert b"do not serve" not in r.content and b"import" not in r.content


def test_metrics_leak_no_prompts(video_server):
    client = openai_client(video_server)
    job = client.videos.create(prompt="a very private calico prompt", size="64x64",
                               extra_body={"num_frames": 1, "num_inference_steps": 1})
    assert wait_for(client, job.id).status == "completed"
    text = httpx.get(video_server.base + "/metrics", headers=AUTH).text
    assert "sgld_http_requests_total" in text and "calico" not in text and "private" not in text


def test_binds_loopback_by_default(video_server):
    from sgld.config.compose import compose_config

    assert compose_config().server.host == "127.0.0.1"
    assert f"Serving on http://127.0.0.1:{video_server.port}" in video_server.log.read_text()
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1", "127.0.1.1"}
    for address in others:  # another interface of this machine: nothing listens there
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, video_server.port)) != 0, address


class _Marker:
    """Unpickling this creates a file: proof that a pickle was executed."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickle_weights_are_never_loaded(tmp_path, tiny_wan_folder):
    from sgld import DiffGenerator
    from sgld.errors import UserError

    folder = tmp_path / "pickled-wan"
    shutil.copytree(tiny_wan_folder, folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    marker = tmp_path / "pickle-was-executed"
    _Marker.path = str(marker)
    (weights.parent / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Marker()))
    with pytest.raises(UserError) as info:
        DiffGenerator.from_pretrained(str(folder))
    assert "safetensors" in str(info.value) and "transformer" in str(info.value)
    assert not marker.exists()
