"""What SGLang's clients, gateway and test harness read of a server: the discovery endpoints, requests that arrive
while the model loads (queued, or waited for), the [server-load] line and the per-request performance log."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx2 as httpx
import pytest

from tests.server.conftest import ServerProcess, launched_together, wait_for


def test_sglangs_discovery_endpoints(server):
    base = server.base
    assert httpx.get(base + "/liveness", timeout=10).json() == {"status": "ok"}
    health = httpx.get(base + "/health_generate", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert httpx.get(base + "/server_info", timeout=10).json() == {
        "model_path": "tiny-wan-t2v", "served_model_name": "tiny-wan-t2v", "tp_size": 1, "dp_size": 1,
        "version": httpx.get(base + "/server_info", timeout=10).json()["version"]}
    info = httpx.get(base + "/model_info", timeout=10).json()
    assert info == {"model_path": "tiny-wan-t2v", "is_generation": True, "model_type": "diffusion",
                    "architectures": ["WanPipeline"], "has_image_understanding": False,
                    "has_audio_understanding": False, "task_type": "T2V", "supported_task_types": ["T2V"],
                    "output_types": ["VIDEO"], "is_image_gen": False}
    assert httpx.get(base + "/v1/model_info", timeout=10).json() == {"model_path": "tiny-wan-t2v"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_wan_folder):
    """This module's two servers, launched together when the first is asked for (a start is mostly a
    single-threaded import: side by side they take both cores): ``named`` serves the model as wan-small; ``perf``
    has SGLang's stage logging and performance log on (``perf.folder`` holds its logs, ``perf.launched_ns`` is the
    monotonic clock just before its launch)."""
    named = ServerProcess(tmp_path_factory.mktemp("named") / "out", "--served-model-name", "wan-small")
    folder = tmp_path_factory.mktemp("perf")
    perf = ServerProcess(folder / "out", "--uvicorn-access-log-exclude-prefixes", "/health",
                         env={"SGLANG_DIFFUSION_STAGE_LOGGING": "1", "SGLANG_PERF_LOG_DIR": str(folder / "logs")})
    perf.folder = folder
    perf.launched_ns = time.monotonic_ns()  # perf launches first, right after this
    with launched_together({"perf": perf, "named": named}, timeout=120) as ready:
        yield ready


def test_served_model_name_is_the_models_id(servers):
    srv = servers("named")
    client = srv.openai()
    assert [m.id for m in client.models.list().data] == ["wan-small"]
    assert client.models.retrieve("wan-small").model_extra["root"] == "wan-small"
    assert client.models.retrieve("tiny-wan-t2v").id == "wan-small"  # the path still finds it
    assert httpx.get(srv.base + "/server_info", timeout=10).json()["served_model_name"] == "wan-small"


def test_the_load_line_and_the_performance_log(servers):
    """SGLang's switches (SGLANG_DIFFUSION_STAGE_LOGGING, SGLANG_PERF_LOG_DIR) turn the log on; each completed job
    appends one line whose request_id is its id, with each stage's and each denoise step's milliseconds."""
    srv = servers("perf")
    folder, before = srv.folder, srv.launched_ns
    log = srv.log.read_text()
    marker = re.search(r"\[server-load\] workers_ready_monotonic_ns=(\d+)", log)
    assert marker and before < int(marker.group(1)) < time.monotonic_ns()  # one clock, the system's
    assert "GET /health" not in log  # the probes are left out of the request log, as asked
    client = srv.openai()
    video = wait_for(client, client.videos.create(prompt="a fox", extra_body={"num_inference_steps": 3}).id)
    assert video.status == "completed"
    lines = (folder / "logs" / "performance.log").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"request_id", "timestamp", "commit_hash", "tag", "stages", "steps", "total_duration_ms",
                           "memory_snapshots"}
    assert record["request_id"] == video.id and record["tag"] == "pipeline_stage_metrics"
    stages = {stage["name"]: stage for stage in record["stages"]}
    assert {"encode_prompt", "denoise", "decode"} <= set(stages) and stages["denoise"]["is_denoising"]
    assert not stages["decode"]["is_denoising"] and all(s["execution_time_ms"] > 0 for s in stages.values())
    assert len(record["steps"]) == 3 and all(ms > 0 for ms in record["steps"])
    assert record["total_duration_ms"] >= stages["denoise"]["execution_time_ms"]


def test_perf_log_dir_option_and_the_sglang_switch(tmp_path):
    from sgld.run_config import run_config_from_options
    from server.perf_log import perf_log_dir

    run = run_config_from_options({"model_path": "tiny-wan-t2v", "output_path": str(tmp_path)})
    assert perf_log_dir(run, env={}) is None  # off by default
    assert perf_log_dir(run, env={"SGLANG_DIFFUSION_STAGE_LOGGING": "1"}) == tmp_path / "logs"
    assert perf_log_dir(run, env={"SGLANG_DIFFUSION_STAGE_LOGGING": "true", "SGLANG_PERF_LOG_DIR": "/x"}).as_posix() == "/x"
    flagged = run_config_from_options({"model_path": "tiny-wan-t2v", "perf_log_dir": str(tmp_path / "p")})
    assert perf_log_dir(flagged, env={}) == tmp_path / "p"


def _gated_app(model: str, tmp_path, gate: threading.Event, fail: bool = False):
    """An in-process app whose engine loads only once ``gate`` is set (or then fails)."""
    from sgld.run_config import run_config_from_options
    from server import create_app
    from server.engine import load_engine

    def load(run, on_failure):
        gate.wait(120)
        if fail:
            raise RuntimeError("injected load failure")
        return load_engine(run, on_failure)

    run = run_config_from_options({"model_path": model, "output_path": str(tmp_path)})
    return create_app(run, load=load)


def _until(check, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        assert time.perf_counter() < deadline, "timed out"
        time.sleep(0.2)


def test_a_video_request_while_loading_is_queued_and_runs_once_loaded(tmp_path, sgld_home, tiny_wan_folder):
    gate = threading.Event()
    app = _gated_app("tiny-wan-t2v", tmp_path, gate)
    client = app.test_client()
    try:
        assert client.get("/health").status_code == 503 and client.get("/health").get_json()["status"] == "loading"
        created = client.post("/v1/videos", json={"prompt": "a fox", "num_inference_steps": 2})
        assert created.status_code == 200 and created.get_json()["status"] == "queued"
        bad = client.post("/v1/videos", json={"prompt": "a fox", "size": "65x64"})  # checked against the folder
        assert bad.status_code == 400
        assert client.get("/health").status_code == 503  # probes still see it loading
        gate.set()
        video_id = created.get_json()["id"]
        _until(lambda: client.get(f"/v1/videos/{video_id}").get_json()["status"] in ("completed", "failed"))
        assert client.get(f"/v1/videos/{video_id}").get_json()["status"] == "completed"
    finally:
        gate.set()
        app.extensions["sgld"].stop()


def test_an_image_request_while_loading_waits_for_its_image(tmp_path, sgld_home):
    from sgld.model_builders.tiny import materialize_tiny

    materialize_tiny("tiny-z-image")
    gate = threading.Event()
    app = _gated_app("tiny-z-image", tmp_path, gate)
    answers: list = []
    request = threading.Thread(target=lambda: answers.append(app.test_client().post(
        "/v1/images/generations", json={"prompt": "a red cube", "size": "64x64", "response_format": "b64_json"})))
    try:
        request.start()
        time.sleep(1.0)
        assert not answers and app.test_client().get("/health").status_code == 503
        gate.set()
        request.join(120)
        assert answers and answers[0].status_code == 200 and answers[0].get_json()["data"][0]["b64_json"]
    finally:
        gate.set()
        app.extensions["sgld"].stop()


def test_only_a_failed_load_answers_503_with_the_reason(tmp_path, sgld_home, tiny_wan_folder):
    gate = threading.Event()
    gate.set()
    app = _gated_app("tiny-wan-t2v", tmp_path, gate, fail=True)
    client = app.test_client()
    try:
        _until(lambda: client.get("/health").get_json()["status"] == "error")
        refused = client.post("/v1/videos", json={"prompt": "a fox"})
        assert refused.status_code == 503 and "injected load failure" in refused.get_json()["error"]["message"]
    finally:
        app.extensions["sgld"].stop()


@pytest.mark.parametrize("family, splits", [("z_image", False), ("hunyuan", False), ("wan_t2v", True),
                                            ("flux", True), ("qwen_image", True)])
def test_which_families_serve_num_gpus_as_data_parallel_workers(family, splits):
    from sgld.families import FAMILIES
    from server.layout import nothing_to_split

    assert nothing_to_split(FAMILIES[family]) is not splits


def test_num_gpus_alone_on_z_image_serves_two_workers_and_a_given_degree_stays(tmp_path, sgld_home):
    from sgld.model_builders.tiny import materialize_tiny
    from sgld.run_config import run_config_from_options
    from server.layout import data_parallel_options

    materialize_tiny("tiny-z-image")
    options = {"model_path": "tiny-z-image", "num_gpus": 2, "output_path": str(tmp_path)}
    spread = data_parallel_options(options, run_config_from_options(options))
    assert spread is not None and spread["dp_size"] == 2
    assert run_config_from_options(spread).parallel.dp_size == 2
    explicit = {**options, "ulysses_degree": 2}
    assert data_parallel_options(explicit, run_config_from_options(explicit)) is None
