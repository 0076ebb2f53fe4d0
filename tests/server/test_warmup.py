"""Serving fast by default: compile unless something conflicts, and warm each size up before /health says ok."""

from __future__ import annotations

import logging
import time

import pytest

from sgld.errors import UserError


def _run(tmp_path, **options):
    from sgld.run_config import run_config_from_options

    return run_config_from_options({"model_path": "tiny-flux", "output_path": str(tmp_path), **options})


def test_compile_is_on_by_default_when_serving_on_a_gpu_and_nothing_conflicts(tmp_path, sgld_home, caplog):
    from server.warmup import compile_for_serving

    auto = _run(tmp_path)
    assert auto.model.enable_torch_compile is None  # generate leaves it off: unset is not on
    assert compile_for_serving(auto, cuda=True).model.enable_torch_compile is True
    assert compile_for_serving(auto, cuda=False).model.enable_torch_compile is False
    assert auto.model.enable_torch_compile is None  # the run it was given is unchanged
    for explicit in (True, False):  # --enable-torch-compile / --no-torch-compile stay as given
        run = _run(tmp_path, enable_torch_compile=explicit)
        assert compile_for_serving(run, cuda=not explicit).model.enable_torch_compile is explicit
    with caplog.at_level(logging.INFO, logger="sgld.server"):
        cached = compile_for_serving(_run(tmp_path, cache="first_block"), cuda=True)
        with_loras = compile_for_serving(_run(tmp_path, lora_dir=str(tmp_path)), cuda=True)
    assert cached.model.enable_torch_compile is False and with_loras.model.enable_torch_compile is False
    assert "torch.compile: off (cache.kind=first_block cannot be combined with model.enable_torch_compile" in caplog.text
    assert "torch.compile: off (LoRA adapters are switchable" in caplog.text


def test_the_cli_spells_the_opt_out_no_torch_compile():
    from sgld.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["serve", "--model-path", "m", "--no-torch-compile"]).enable_torch_compile is False
    assert parse(["serve", "--model-path", "m", "--enable-torch-compile"]).enable_torch_compile is True
    assert parse(["serve", "--model-path", "m"]).enable_torch_compile is None
    assert parse(["serve", "--model-path", "m", "--warmup-sizes", "64x64", "48x64"]).warmup_sizes == ["64x64", "48x64"]


@pytest.mark.parametrize("size", ["64by64", "64x", "0x64", "64x64x9x2"])
def test_warmup_sizes_are_checked_when_the_run_is_composed(size, tmp_path, sgld_home):
    with pytest.raises(UserError, match=f"server.warmup_sizes: '{size}' is not a size; write WIDTHxHEIGHT"):
        _run(tmp_path, warmup_sizes=[size])


def _ready(app, timeout: float = 300) -> dict:
    client = app.test_client()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        health = client.get("/health")
        if health.status_code == 200 or health.get_json()["status"] == "error":
            return health.get_json()
        time.sleep(0.2)
    raise TimeoutError("the server did not become ready")


def test_a_compiled_server_warms_up_before_ready_and_requests_then_compile_nothing(tmp_path, sgld_home):
    """On CPU with compile asked for: the warm-up traces size 64x64 alone and as a batch of 2 before /health
    is 200; a request of that size afterwards adds no compiled graph."""
    from torch._dynamo.utils import counters

    from server import create_app

    app = create_app(_run(tmp_path, enable_torch_compile=True, warmup_sizes=["64x64"]))
    svc = app.extensions["sgld"]
    try:
        health = _ready(app)
        assert health["status"] == "ok", health
        startup = health["startup"]
        assert startup["torch_compile"] is True
        assert [(w["size"], w["batch"]) for w in startup["warmup"]] == [("64x64", 1), ("64x64", 2)]
        assert startup["seconds"] >= startup["load_s"] + sum(w["seconds"] for w in startup["warmup"]) - 0.1
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0
        response = app.test_client().post("/v1/images/generations", json={
            "prompt": "a red fox", "size": "64x64", "num_inference_steps": 2, "response_format": "b64_json"})
        assert response.status_code == 200, response.get_json()
        assert counters["stats"]["unique_graphs"] == graphs  # warmed: the request compiled nothing new
    finally:
        svc.stop()


def test_a_size_the_model_refuses_fails_the_warm_up_on_health(tmp_path, sgld_home):
    from server import create_app

    app = create_app(_run(tmp_path, warmup_sizes=["60x64"]))
    try:
        health = _ready(app)
        assert health["status"] == "error" and health["message"].startswith("warm-up failed: "), health
        assert "60" in health["message"]
    finally:
        app.extensions["sgld"].stop()


def test_an_image_to_video_model_warms_up_with_an_image_of_its_own(tmp_path, sgld_home):
    from server import create_app

    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": "tiny-wan21-i2v", "output_path": str(tmp_path),
                                   "warmup_sizes": ["64x48x9"]})
    app = create_app(run)
    try:
        health = _ready(app)
        assert health["status"] == "ok", health
        assert [(w["size"], w["batch"]) for w in health["startup"]["warmup"]][0] == ("64x48x9", 1)
        assert health["startup"]["torch_compile"] is False
    finally:
        app.extensions["sgld"].stop()
