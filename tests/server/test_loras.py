"""LoRA adapters on a real server: the LoRA dir's listing, per-request adapters equal to the CLI's run with them,
requests outside the dir refused, SGLang's control endpoints."""

from __future__ import annotations

import concurrent.futures

import httpx2 as httpx
import numpy as np
import pytest

from tests.conftest import read_mp4
from tests.server.conftest import ServerProcess, launched_together, wait_for
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
def servers(tmp_path_factory, lora_dir, tiny_wan_folder):
    """The module's three servers, launched together when the first is asked for (a start is mostly a
    single-threaded import: side by side they take both cores): ``dir`` serves the LoRA dir; ``plain`` has no
    --lora-path and no --lora-dir, and a local Hub cache holding an adapter by repo id (its file: ``plain.lora``);
    ``both`` has a --lora-path adapter that is also in the LoRA dir."""
    file = make_lora(tiny_wan_folder, tmp_path_factory.mktemp("made"), 1)
    hub = tmp_path_factory.mktemp("hub")
    snapshot = hub / "models--sgld-test--tiny-lora" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "adapter.safetensors").write_bytes(file.read_bytes())
    (hub / "models--sgld-test--tiny-lora" / "refs").mkdir()
    (hub / "models--sgld-test--tiny-lora" / "refs" / "main").write_text("0" * 40)
    launched = {
        "dir": ServerProcess(tmp_path_factory.mktemp("lora-server") / "out", "--lora-dir", str(lora_dir),
                             "--max-loaded-loras", "2"),
        "plain": ServerProcess(tmp_path_factory.mktemp("plain") / "out",
                               env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}),
        "both": ServerProcess(tmp_path_factory.mktemp("both") / "out", "--lora-path",
                              str(lora_dir / "style_a.safetensors"), "--lora-dir", str(lora_dir)),
    }
    launched["plain"].lora = file
    with launched_together(launched, timeout=240) as ready:
        yield ready


@pytest.fixture(scope="module")
def lora_server(servers):
    return servers("dir")


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
    """set_lora by nickname (a known nickname alone re-activates it), unmerge turns the adapters off and merge on
    again (SGLang's semantics), replies say status ok, list_loras answers SGLang's shape."""
    client = lora_server.openai()
    post = lambda path, body=None: httpx.post(lora_server.url + path, json=body, timeout=60)  # noqa: E731
    r = post("/set_lora", {"lora_nickname": "a", "lora_path": "style_a", "strength": 0.8})
    assert r.status_code == 200 and r.json()["status"] == "ok" and "a (target: all, strength: 0.8)" in r.json()["message"]
    default = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "default")
    named = frames_of(client, client.videos.create(prompt="a red fox", size="64x64", extra_body={
        "num_inference_steps": 2, "seed": 4, "loras": [{"name": "style_a", "scale": 0.8}]}), tmp_path, "named")
    assert np.array_equal(default, named)  # a request without loras runs the server's default adapters
    listed = httpx.get(lora_server.url + "/list_loras", timeout=10).json()
    assert {"nickname": "a", "path": "style_a"} in listed["loaded_adapters"]
    assert [(x["nickname"], x["strength"]) for x in listed["active"]["transformer"]] == [("a", 0.8)]
    # JSON: the SDK's multipart form drops an empty list (the request would then run the default adapters).
    no_adapters = httpx.post(lora_server.url + "/videos", timeout=60, json={
        "prompt": "a red fox", "size": "64x64", "num_inference_steps": 2, "seed": 4, "loras": []}).json()
    none = frames_of(client, client.videos.retrieve(no_adapters["id"]), tmp_path, "none")

    assert httpx.post(lora_server.url + "/unmerge_lora_weights", timeout=60).json()["status"] == "ok"  # no body
    assert httpx.get(lora_server.url + "/list_loras", timeout=10).json()["active"] == {}
    off = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "off")
    assert np.abs(off - none).max() <= 2 and np.abs(off - default).max() >= 10  # off: the base model
    assert post("/merge_lora_weights", {"target": "all"}).json()["status"] == "ok"
    assert np.abs(frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "on") - default).max() <= 2

    assert post("/set_lora", {"lora_nickname": "b", "lora_path": "nested/style_b"}).status_code == 200
    assert post("/set_lora", {"lora_nickname": "a", "strength": 0.8}).status_code == 200  # known: no path needed
    again = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "again")
    assert np.abs(again - default).max() <= 2
    both = post("/set_lora", {"lora_nickname": ["a", "b"], "lora_path": [None, None], "strength": [0.5, 0.5]})
    assert both.status_code == 200, both.text
    assert post("/set_lora", {"lora_nickname": "a", "target": ["transformer", "transformer_2"]}).status_code == 200

    missing = post("/set_lora", {"lora_nickname": "c", "lora_path": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "lora_not_found"
    unknown = post("/set_lora", {"lora_nickname": "never-loaded"})
    assert unknown.status_code == 404 and "give its lora_path" in unknown.json()["detail"]
    outside = post("/set_lora", {"lora_nickname": "c", "lora_path": "../secret.safetensors"})
    assert outside.status_code == 400 and "outside the LoRA folder" in outside.json()["detail"]
    assert post("/set_lora", {"lora_path": "style_a"}).json()["error"]["param"] == "lora_nickname"
    assert post("/unmerge_lora_weights", {"target": "critic"}).status_code == 200  # SGLang: a warning, not an error


def test_set_lora_on_a_server_started_without_adapters(servers, tmp_path):
    """A local file or a Hugging Face repo id (here from the local Hub cache), on a server with no --lora-path
    and no --lora-dir; a --lora-path adapter would be nicknamed 'default'."""
    srv = servers("plain")
    file = srv.lora
    client = srv.openai()
    before = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "before")
    r = httpx.post(srv.url + "/set_lora", json={"lora_nickname": "local", "lora_path": str(file)}, timeout=60)
    assert r.status_code == 200, r.text
    local = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "local")
    assert np.abs(local - before).max() >= 10
    r = httpx.post(srv.url + "/set_lora", json={"lora_nickname": "hub", "lora_path": "sgld-test/tiny-lora"},
                   timeout=60)
    assert r.status_code == 200, r.text
    hub_frames = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "hub")
    assert np.abs(hub_frames - local).max() <= 2  # the same file, by repo id
    listed = httpx.get(srv.url + "/list_loras", timeout=10).json()["loaded_adapters"]
    assert [a["nickname"] for a in listed] == ["local", "hub"] and listed[1]["path"] == "sgld-test/tiny-lora"
    gone = httpx.post(srv.url + "/set_lora", json={"lora_nickname": "x", "lora_path": "sgld-test/absent"}, timeout=60)
    assert gone.status_code == 400 and "HF_HUB_OFFLINE" in gone.json()["detail"]


def test_a_lora_path_adapter_is_default_and_the_same_file_in_the_lora_dir_does_not_collide(servers, tmp_path):
    srv = servers("both")
    listed = httpx.get(srv.url + "/list_loras", timeout=10).json()
    assert [a["nickname"] for a in listed["loaded_adapters"]] == ["default"]
    client = srv.openai()
    by_name = frames_of(client, client.videos.create(prompt="a red fox", size="64x64", extra_body={
        "num_inference_steps": 2, "seed": 4, "loras": [{"name": "style_a"}]}), tmp_path, "by_name")
    default = frames_of(client, client.videos.create(prompt="a red fox", **SMALL), tmp_path, "default")
    assert np.abs(by_name - default).max() <= 2  # one file under two names: both load, the same output
    r = httpx.post(srv.url + "/set_lora", json={"lora_nickname": "default"}, timeout=60)
    assert r.status_code == 200, r.text


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
