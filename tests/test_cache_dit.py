"""Cache-DiT through the cache-dit package: sgld with a cache-dit config equals cache_dit.enable_cache on the diffusers
reference pipeline (same folder, seed, config: the same steps served from the cache, pixels within 2/255), per-request
settings never leak into the next request, SGLang's variables and knobs, and what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgld import DiffGenerator
from sgld.errors import UserError

TOLERANCE = 2 / 255
# Few blocks, a high threshold and a short warm-up, so the tiny models' 8 steps serve several from the cache.
CONFIG = {"cache_config": {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 2,
                           "residual_diff_threshold": 0.9, "max_continuous_cached_steps": 2}}
WAN = dict(prompt="a red fox", negative_prompt="blurry", height=32, width=32, num_frames=5, num_inference_steps=8,
           guidance_scale=5.0, seed=5)
IMAGE = dict(prompt="a curious calico cat", height=64, width=64, num_inference_steps=8, seed=5)
CASES = {
    "tiny-wan-t2v": WAN,
    "tiny-flux": {**IMAGE, "guidance_scale": 3.5},
    "tiny-qwen-image": {**IMAGE, "negative_prompt": "blurry", "guidance_scale": 4.0},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache_dit") / "cache_dit.yaml"
    path.write_text(json.dumps(CONFIG))  # JSON is YAML: cache-dit's loader reads both
    return str(path)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cached_steps(transformer) -> tuple[list[int], list[int]]:
    """The steps cache-dit served from its cache in the last call (conditional, unconditional branch)."""
    context = transformer._context_manager.get_context(transformer._context_names[-1])
    return context.get_cached_steps(), context.get_cfg_cached_steps()


def sgld_run(model: str, settings: dict, **loaded):
    gen = DiffGenerator.from_pretrained(model, **loaded)
    result = gen.generate(**settings, save_output=False, return_frames=True)
    return gen, result


def reference(model: str, settings: dict, config_file: str):
    """The diffusers pipeline of the folder with cache_dit.enable_cache(pipe, <the same config>)."""
    import cache_dit
    import diffusers

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.models.registry import read_model_index

    folder = materialize_tiny(model)
    pipe = getattr(diffusers, read_model_index(folder)["_class_name"]).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    cache_config, calibrator = cache_dit.load_cache_config(config_file)
    cache_dit.enable_cache(pipe, cache_config=cache_config, calibrator_config=calibrator)
    call = dict(settings)
    seed = call.pop("seed")
    if model == "tiny-qwen-image":
        call["true_cfg_scale"] = call.pop("guidance_scale")
    out = pipe(generator=torch.Generator().manual_seed(seed), output_type="np", **call)
    frames = out.frames[0] if hasattr(out, "frames") else out.images
    return frames, cached_steps(pipe.transformer)


@pytest.mark.parametrize("model", list(CASES))
def test_equals_cache_dit_on_the_reference_pipeline(model, config_file):
    settings = CASES[model]
    gen, mine = sgld_run(model, settings, cache_dit_config=config_file)
    ref, ref_steps = reference(model, settings, config_file)
    transformer = gen.pipeline.components["transformer"]
    assert cached_steps(transformer) == ref_steps and ref_steps[0], ref_steps  # the same steps served from the cache
    diff = np.abs(mine.frames.astype(np.float64) / 255 - ref).max()
    assert diff <= TOLERANCE, f"max per-pixel difference {diff * 255:.2f}/255"
    guided = model != "tiny-flux"
    report = mine.step_cache
    assert report["kind"] == "cache_dit"
    assert report["cached"]["cond"] == len(ref_steps[0])
    assert report["cached"].get("uncond", 0) == (len(ref_steps[1]) if guided else 0)
    assert report["computed"]["cond"] + report["cached"]["cond"] == settings["num_inference_steps"]


@pytest.mark.parametrize("model", ["tiny-wan-t2v", "tiny-flux"])
def test_a_request_setting_does_not_leak(model, config_file):
    """Cached, uncached, cached on one generator: each equals its solo run on a fresh one."""
    settings = CASES[model]
    gen = DiffGenerator.from_pretrained(model, cache_dit_config=config_file)
    runs = [gen.generate(**settings, enable_cache_dit=on, save_output=False, return_frames=True)
            for on in (True, False, True)]
    solo_cached = DiffGenerator.from_pretrained(model, cache_dit_config=config_file).generate(
        **settings, save_output=False, return_frames=True)
    plain = DiffGenerator.from_pretrained(model).generate(**settings, save_output=False, return_frames=True)
    assert np.array_equal(runs[0].frames, solo_cached.frames)
    assert np.array_equal(runs[1].frames, plain.frames) and runs[1].step_cache is None
    assert np.array_equal(runs[2].frames, solo_cached.frames)
    # A run started without Cache-DiT mounts it for the request that asks, and gives the same frames.
    late = DiffGenerator.from_pretrained(model, cache_dit_config=config_file, cache="none")
    assert np.array_equal(late.generate(**settings, save_output=False, return_frames=True).frames, plain.frames)
    turned_on = late.generate(**settings, enable_cache_dit=True, save_output=False, return_frames=True)
    assert np.array_equal(turned_on.frames, solo_cached.frames)


def test_request_knobs_and_sglang_variables(config_file, monkeypatch):
    settings = CASES["tiny-wan-t2v"]
    file_run = DiffGenerator.from_pretrained("tiny-wan-t2v", cache_dit_config=config_file).generate(
        **settings, save_output=False, return_frames=True)
    # SGLang's variables, with the file's values: the same steps cached, the same frames.
    for name, value in (("ENABLED", "true"), ("FN", "1"), ("BN", "0"), ("WARMUP", "2"), ("RDT", "0.9"), ("MC", "2")):
        monkeypatch.setenv(f"SGLANG_CACHE_DIT_{name}", value)
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    assert gen.run.cache.kind == "cache_dit"
    env_run = gen.generate(**settings, save_output=False, return_frames=True)
    assert np.array_equal(env_run.frames, file_run.frames) and env_run.step_cache == file_run.step_cache
    # SGLang's knobs per request: threshold 0 caches nothing; a step mask caches exactly its zeros.
    never = gen.generate(**settings, cache_dit_params={"residual_diff_threshold": 0.0}, save_output=False,
                         return_frames=True)
    assert never.step_cache["cached"] == {}
    masked = gen.generate(**settings, cache_dit_params={"scm_compute_bins": [3, 2, 1], "scm_cache_bins": [1, 1],
                                                       "scm_policy": "static"}, save_output=False, return_frames=True)
    assert masked.step_cache["cached"] == {"cond": 2, "uncond": 2}
    with pytest.raises(UserError, match="unknown key"):
        gen.generate(**settings, cache_dit_params={"Fn_blocks": 2})
    with pytest.raises(UserError, match="residual_diff_threshold='high' must be float"):
        gen.generate(**settings, cache_dit_params={"residual_diff_threshold": "high"})


def test_what_is_refused(tmp_path, config_file):
    with pytest.raises(UserError, match="one step cache"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="first_block", enable_cache_dit=True)
    with pytest.raises(UserError, match="cuda_graphs"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="cache_dit", cuda_graphs=True)
    with pytest.raises(UserError, match="layerwise"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="cache_dit", dit_layerwise_offload=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("parallelism_config:\n  ulysses_size: 2\n")
    with pytest.raises(UserError, match="sets parallelism_config"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache_dit_config=str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("cache_config:\n  Fn_compute_block: 2\n")
    with pytest.raises(UserError, match="unknown key.*Fn_compute_block"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache_dit_config=str(typo))


def test_sequence_parallel_needs_cache_dit_at_load():
    from sgld.config.conflicts import check_conflicts
    from sgld.errors import ConfigError
    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": "tiny-wan-t2v", "num_gpus": 2, "ulysses_degree": 2})
    run.sampling.enable_cache_dit = True
    with pytest.raises(ConfigError, match="before the context-parallel hooks"):
        check_conflicts(run)
    run.cache.kind = "cache_dit"  # mounted at load: requests may turn it on and off
    check_conflicts(run)


def test_flags_map_to_keys(config_file):
    from sgld.cli import build_parser, collect_options
    from sgld.run_config import run_config_from_options

    args = build_parser().parse_args(["generate", "--model-path", "tiny-wan-t2v", "--cache-dit-config", config_file,
                                      "--cache-dit-params", '{"residual_diff_threshold": 0.1}',
                                      "--no-enable-cache-dit"])
    run = run_config_from_options(collect_options(args))
    assert run.cache.cache_dit_config == config_file and run.cache.kind == "cache_dit"
    assert run.sampling.cache_dit_params == {"residual_diff_threshold": 0.1}
    assert run.sampling.enable_cache_dit is False


def test_sequence_and_cfg_parallel_equal_one_process(config_file):
    """Ulysses-2 and CFG parallel on 2 gloo processes (one launch) with Cache-DiT mounted at load: the frames of one
    process. (cache-dit averages the residual difference over the ranks; the shards' mean is the whole sequence's.)"""
    from tests.support.one_group import generate_on_one_group

    _, one = sgld_run("tiny-wan-t2v", WAN, cache_dit_config=config_file)
    base = {"model_path": "tiny-wan-t2v", **WAN, "cache_dit_config": config_file, "num_gpus": 2}
    results = generate_on_one_group([{**base, "ulysses_degree": 2}, {**base, "enable_cfg_parallel": True}])
    for name, result in zip(("ulysses2", "cfg2"), results):
        diff = np.abs(result.frames.astype(np.int16) - one.frames.astype(np.int16)).max()
        assert diff <= 2, f"{name}: {diff}/255"
