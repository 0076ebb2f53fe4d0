"""LoRA adapters on a real server: the LoRA dir's listing, per-request adapters equal to the CLI's run with them,
requests outside the dir refused, SGLang's control endpoints."""

from __future__ import annotations

import concurrent.futures

import httpx2 as httpx
import numpy as np
import pytest

from tests.conftest import read_mp4
from tests.server.conftest import ServerProcess, wait_for
from tests.support.lora import make_lora

SMALL = dict(size="64x64", extra_body={"num_inference_steps": 2, "seed": 4})


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_wan_folder):
    folder = tmp_path_factory.mktemp("loras")
    for seed, name in ((1, "style_a"), (2, "nested/style_b")):
        file = make_lora(tiny_wan_folder, tmp_path_factory.mktemp("made"), seed)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.safetensors").write_bytes(file.read_bytes())
    (tmp_path_factory.getbasetemp() / "secret.safetensors").write_bytes(b"outside the LoRA dir")
    (folder / "evil.pt").write_bytes(b"a pickle is never opened")
    return folder


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory, lora_dir):
    srv = ServerProcess(tmp_path_factory.mktemp("lora-server") / "out", "--lora-dir", str(lora_dir),
                        "--max-loaded-loras", "2")
    srv.start()
    yield srv
    srv.stop()


def frames_of(client, video, tmp_path, name):
    video = wait_for(client, video.id, timeout=120)
    assert video.status == "completed", video.error
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(client.videos.download_content(video_id=video.id).read())
    return np.stack(read_mp4(path)[1]).astype(int)


def cli_frames(tmp_path, name, *lora_args):
    from sgld.cli import main

    assert main(["generate", "--model-path", "tiny-wan-t2v", "--prompt", "a red fox", "--height", "64", "--width", "64",
                 "--num-inference-steps", "2", "--seed", "4", "--output-path", str(tmp_path),
                 "--output-file-name", f"{name}.mp4", *lora_args]) == 0
    return np.stack(read_mp4(tmp_path / f"{name}.mp4")[1]).astype(int)


def test_the_lora_dir_is_listed(lora_server):
    listing = httpx.get(lora_server.url + "/loras", timeout=10).json()["data"]
    assert [a["name"] for a in listing] == ["nested/style_b", "style_a"]
    assert all(a["file_size"] > 0 and "attn1.to_q" in a["target_modules"] for a in listing)
    assert httpx.get(lora_server.url + "/list_loras", timeout=10).json()["data"] == listing


def test_concurrent_requests_with_different_adapters_each_equal_their_cli_run(lora_server, lora_dir, tmp_path):
    client = lora_server.openai()
    requests = {"a": [{"name": "style_a", "scale": 0.8}], "b": [{"name": "nested/style_b.safetensors"}], "none": []}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = {name: pool.submit(client.videos.create, prompt="a red fox", size="64x64",
                                  extra_body={"num_inference_steps": 2, "seed": 4, "loras": loras})
                for name, loras in requests.items()}
        served = {name: frames_of(client, job.result(), tmp_path, name) for name, job in jobs.items()}
    # The server switches adapters, so it runs them dynamic; so does the CLI run here (merged differs by float
    # rounding, which the mp4 encoder can turn into visible block differences).
    dynamic = ("--lora-merge-mode", "dynamic")
    expected = {
        "a": cli_frames(tmp_path, "cli_a", "--lora-path", str(lora_dir / "style_a.safetensors"), "--lora-scale", "0.8",
                        *dynamic),
        "b": cli_frames(tmp_path, "cli_b", "--lora-path", str(lora_dir / "nested" / "style_b.safetensors"), *dynamic),
        "none": cli_frames(tmp_path, "cli_none"),
    }
    for name in requests:
        assert np.abs(served[name] - expected[name]).max() <= 2, name
    assert np.abs(served["a"] - served["none"]).max() >= 10  # the adapters really ran
    loaded = {a["name"]: a["loaded"] for a in httpx.get(lora_server.url + "/loras", timeout=10).json()["data"]}
    assert loaded == {"style_a": True, "nested/style_b": True}


@pytest.mark.parametrize("loras,status,message", [
    ([{"name": "../secret.safetensors"}], 400, "outside the LoRA folder"),
    ([{"name": "/etc/passwd"}], 400, "outside the LoRA folder"),
    ([{"name": "nope"}], 404, "no LoRA 'nope'"),
    ([{"name": "evil.pt"}], 400, "not a .safetensors file"),
    ([{"name": "style_a", "scale": "strong"}], 400, "not a finite number"),
    ("style_a", 400, "array"),
])
def test_bad_adapter_requests_are_refused_before_queueing(lora_server, loras, status, message):
    r = httpx.post(lora_server.url + "/videos", json={"prompt": "a fox", "size": "64x64", "loras": loras}, timeout=10)
    assert r.status_code == status and message in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "loras"


def test_sglangs_control_endpoints(lora_server, tmp_path):
    client = lora_server.openai()
    r = httpx.post(lora_server.url + "/set_lora", json={"lora_path": "style_a", "strength": 0.8}, timeout=60)
    assert r.status_code == 200 and r.json()["success"], r.text
    default = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "default")
    named = frames_of(client, client.videos.create(prompt="a red fox", size="64x64", extra_body={
        "num_inference_steps": 2, "seed": 4, "loras": [{"name": "style_a", "scale": 0.8}]}), tmp_path, "named")
    assert np.array_equal(default, named)  # a request without loras runs the server's default adapters
    for path in ("/merge_lora_weights", "/unmerge_lora_weights"):
        assert httpx.post(lora_server.url + path, timeout=60).json()["success"]
    assert np.array_equal(frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "again"), default)
    missing = httpx.post(lora_server.url + "/set_lora", json={"lora_path": "nope"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "lora_not_found"
    assert httpx.post(lora_server.url + "/set_lora", json={"lora_path": []}, timeout=10).status_code == 400


def test_the_playground_offers_the_adapters(lora_server, browser):
    page = browser.new_page()
    page.goto(lora_server.base + "/")
    page.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-wan-t2v')")
    assert page.locator("#lora option").all_text_contents() == ["none", "nested/style_b", "style_a"]
    page.get_by_label("Prompt", exact=True).fill("a red fox with a style")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("LoRA adapter").select_option("style_a")
    page.get_by_label("Strength").fill("0.8")
    with page.expect_request(lambda r: r.url.endswith("/v1/videos") and r.method == "POST") as sent:
        page.get_by_role("button", name="Generate").click()
    assert sent.value.post_data_json["loras"] == [{"name": "style_a", "scale": 0.8}]
    page.wait_for_selector("#output video", timeout=120_000)
    assert page.get_by_role("status").text_content().startswith("Done")
    page.close()
