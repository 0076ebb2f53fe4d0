"""Input images named by URL on real servers and in the CLI: SGLang's url / url[] on edits, reference_url on videos,
--image-path https://...; served from a local HTTP server, fetched only with --allow-private-urls."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.server.conftest import ServerProcess, launched_together, wait_for


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, input_png):
    """A local HTTP server with the edit tests' input image and a second one; their URLs and files."""
    folder = tmp_path_factory.mktemp("served")
    second = folder / "second.png"
    Image.open(input_png).rotate(90, expand=True).save(second)
    (folder / "input.png").write_bytes(input_png.read_bytes())
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    yield {"first": (f"{base}/input.png", folder / "input.png"), "second": (f"{base}/second.png", second)}
    server.shutdown()


def _pixels(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))).astype(int)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The module's two servers, launched together on first use (side by side their imports take both cores):
    Edit-Plus allowing private URLs, and a TI2V model at the default (public addresses only)."""
    edit = ServerProcess(tmp_path_factory.mktemp("urls") / "out", "--allow-private-urls",
                         model="tiny-qwen-image-edit-plus")
    ti2v = ServerProcess(tmp_path_factory.mktemp("ti2v-urls") / "out", model="tiny-wan22-ti2v")
    with launched_together({"edit": edit, "ti2v": ti2v}, timeout=240) as ready:
        yield ready


def test_edits_take_sglangs_url_list(servers, inputs):
    srv = servers("edit")
    form = {"prompt": "put them together", "size": "32x32", "num_inference_steps": "1", "seed": "4",
            "output_format": "png"}
    (url_a, file_a), (url_b, file_b) = inputs["first"], inputs["second"]
    by_url = httpx.post(srv.url + "/images/edits", timeout=120, data={**form, "url[]": [url_a, url_b]})
    assert by_url.status_code == 200, by_url.text
    with open(file_a, "rb") as a, open(file_b, "rb") as b:
        uploaded = httpx.post(srv.url + "/images/edits", timeout=120, data=form,
                              files=[("image[]", ("a.png", a, "image/png")), ("image[]", ("b.png", b, "image/png"))])
    assert np.array_equal(_pixels(by_url.json()), _pixels(uploaded.json()))  # the same inputs, the same image
    inline = "data:image/png;base64," + base64.b64encode(file_a.read_bytes()).decode()
    assert httpx.post(srv.url + "/images/edits", timeout=120, data={**form, "url": inline}).status_code == 200
    missing = httpx.post(srv.url + "/images/edits", timeout=120, data={**form, "url": url_a + ".gone"})
    assert missing.status_code == 400 and "HTTP 404" in missing.json()["detail"]
    assert missing.json()["error"]["param"] == "url"
    local = httpx.post(srv.url + "/images/edits", timeout=120, data={**form, "url": "file:///etc/passwd"})
    assert local.status_code == 400 and "only http and https" in local.json()["detail"]


def test_videos_fetch_reference_url_only_from_public_addresses_by_default(servers, inputs, input_png):
    srv = servers("ti2v")
    body = {"prompt": "a fox", "size": "64x64", "num_frames": 5, "num_inference_steps": 1}
    refused = httpx.post(srv.url + "/videos", timeout=60, json={**body, "reference_url": inputs["first"][0]})
    assert refused.status_code == 400 and "--allow-private-urls" in refused.json()["detail"], refused.text
    assert refused.json()["error"]["param"] == "reference_url"
    for name in ("reference_url", "input_reference"):  # a data: URL needs no network
        inline = "data:image/png;base64," + base64.b64encode(input_png.read_bytes()).decode()
        made = httpx.post(srv.url + "/videos", timeout=60, json={**body, name: inline})
        assert made.status_code == 200, made.text
        assert wait_for(srv.openai(), made.json()["id"], timeout=120).status == "completed"


def _generate(image_url: str, out, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sgld.cli", "generate", "--model-path", "tiny-qwen-image-edit",
                             "--prompt", "make it blue", "--image-path", image_url, "--width", "32", "--height", "32",
                             "--num-inference-steps", "1", "--output-path", str(out), "--output-file-name", "edit.png"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_the_cli_fetches_image_path_urls(tmp_path, inputs):
    env = {k: v for k, v in os.environ.items() if k != "SGLD_ALLOW_PRIVATE_URLS"}
    # The two runs side by side (each starts with a single-threaded import).
    refused = _generate(inputs["first"][0], tmp_path / "refused", env)
    done = _generate(inputs["first"][0], tmp_path / "done", {**env, "SGLD_ALLOW_PRIVATE_URLS": "1"})
    out, err = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "--allow-private-urls" in err + out
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]
    assert Image.open(tmp_path / "done" / "edit.png").size == (32, 32)
