"""Composition, validation, and the two front doors producing one RunConfig."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml

from sgld.config import compose_config, finalize, run_config_yaml
from sgld.run_config import run_config_from_options
from sgld.config.compose import CONF_DIR
from sgld.config.config_file import read_config_file
from sgld.errors import ConfigError, UserError

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
PARALLEL = sorted(p.stem for p in (CONF_DIR / "parallel").glob("*.yaml"))
OFFLOAD = sorted(p.stem for p in (CONF_DIR / "offload").glob("*.yaml"))
VAE = sorted(p.stem for p in (CONF_DIR / "vae").glob("*.yaml"))


def test_groups_have_the_required_options():
    assert {"tiny_wan", "tiny_wan22", "wan21", "wan21_14b", "wan22"} <= set(MODELS)
    assert {"single", "usp2", "usp4", "usp8", "ring2", "usp4_ring2x2", "cfg2", "cfg2_usp4"} <= set(PARALLEL)
    assert {"none", "text_encoder", "full"} <= set(OFFLOAD)
    assert {"default", "tiled"} <= set(VAE)


# Every model with every layout, and every layout with every offload x VAE choice: each pair
# of groups is covered without the full product (each compose takes ~0.25 s).
COMBINATIONS = sorted(
    {(m, p, "none", "default") for m, p in itertools.product(MODELS, PARALLEL)}
    | {("tiny_wan", p, o, v) for p, o, v in itertools.product(PARALLEL, OFFLOAD, VAE)}
    | {(m, "single", o, v) for m, o, v in itertools.product(MODELS, OFFLOAD, VAE)}
)


@pytest.mark.parametrize("model,parallel,offload,vae", COMBINATIONS)
def test_every_combination_composes_and_validates(model, parallel, offload, vae):
    run = finalize(compose_config([f"model={model}", f"parallel={parallel}", f"offload={offload}", f"vae={vae}"]))
    par = run.parallel
    assert par.ulysses_degree * par.ring_degree == par.sp_size
    assert par.sp_size * (2 if par.enable_cfg_parallel else 1) == par.num_gpus
    # Model defaults come from the model's own file.
    model_file = yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text())
    for key, value in model_file["sampling_defaults"].items():
        if hasattr(run.sampling, key):
            assert getattr(run.sampling, key) == value, key


def test_headline_parallel_config():
    run = finalize(compose_config(["model=wan22", "parallel=usp4"]))
    assert (run.parallel.num_gpus, run.parallel.sp_size, run.parallel.ulysses_degree, run.parallel.ring_degree) == (4, 4, 4, 1)
    assert run.model.path == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    assert (run.sampling.guidance_scale, run.sampling.guidance_scale_2) == (4.0, 3.0)


def test_two_doors_give_the_same_run_config():
    """The SGLang-style options and the Hydra overrides describe the same request."""
    options = {
        "model_path": "tiny-wan-t2v",
        "prompt": "a red fox, at night: 50% snow",
        "negative_prompt": "blurry",
        "seed": 7,
        "num_inference_steps": 3,
        "height": 48,
        "width": 80,
        "num_frames": 5,
        "fps": 12,
        "guidance_scale": 4.5,
        "output_path": "outputs/x",
        "output_file_name": "fox.mp4",
        "text_encoder_cpu_offload": True,
        "vae_tiling": True,
        "precision": "fp32",
    }
    cli = run_config_from_options(options)
    hydra = finalize(
        compose_config(
            [
                "model=tiny_wan",
                "sampling.prompt='a red fox, at night: 50% snow'",
                "sampling.negative_prompt=blurry",
                "sampling.seed=7",
                "sampling.num_inference_steps=3",
                "sampling.height=48",
                "sampling.width=80",
                "sampling.num_frames=5",
                "sampling.fps=12",
                "sampling.guidance_scale=4.5",
                "output.path=outputs/x",
                "output.file_name=fox.mp4",
                "offload=text_encoder",
                "vae.tiling=true",
                "model.precision=fp32",
            ]
        )
    )
    assert run_config_yaml(cli) == run_config_yaml(hydra)


def test_unknown_key_and_wrong_type_name_the_key():
    with pytest.raises(ConfigError, match="sampling.heigth"):
        compose_config([], {"sampling.heigth": 64})
    with pytest.raises(ConfigError, match="heigth"):
        compose_config(["sampling.heigth=64"])
    with pytest.raises(ConfigError, match="sampling.height"):
        compose_config([], {"sampling.height": "tall"})
    with pytest.raises(ConfigError, match="abc"):
        compose_config(["sampling.seed=abc"])
    with pytest.raises(ConfigError, match="model/nope"):
        compose_config(["model=nope"])


def test_request_values_copy_the_run_and_check_like_the_whole_config():
    """with_values (each request's options) types only the sections it sets, and behaves as composing the whole
    config would: the same RunConfig, the same refusals naming the key, the engine's run untouched."""
    from sgld.config.compose import with_values

    run = finalize(compose_config(["model=wan21"], {"model.path": "tiny-wan-t2v"}))
    before = run_config_yaml(run)
    values = {"sampling.prompt": "a ${oc.env:HOME} fox", "sampling.height": 64, "sampling.seed": 9,
              "output.save": False}
    changed = with_values(run, values)
    assert run_config_yaml(changed) == run_config_yaml(finalize(compose_config(["model=wan21"],
                                                                               {"model.path": "tiny-wan-t2v", **values})))
    assert changed.sampling.prompt == "a ${oc.env:HOME} fox" and changed.sampling.height == 64
    assert run_config_yaml(run) == before  # nothing leaked into the engine's run
    assert run.model is not changed.model and run.sampling is not changed.sampling  # a request may change its own
    with pytest.raises(ConfigError, match="sampling.heigth"):
        with_values(run, {"sampling.heigth": 64})
    with pytest.raises(ConfigError, match="sampling.height"):
        with_values(run, {"sampling.height": "tall"})
    with pytest.raises(ConfigError, match="num_inference_steps must be >= 1"):
        with_values(run, {"sampling.num_inference_steps": 0})
    with pytest.raises(ConfigError, match="'seed'"):
        with_values(run, {"seed": 1})  # a key without its section: the whole config answers


def test_prompt_text_is_not_interpolated(monkeypatch):
    monkeypatch.setenv("SGLD_SECRET", "leaked")
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "prompt": "a ${oc.env:SGLD_SECRET} fox"})
    assert run.sampling.prompt == "a ${oc.env:SGLD_SECRET} fox"


@pytest.mark.parametrize(
    "options,match",
    [
        ({"ulysses_degree": 2, "ring_degree": 2, "sp_size": 2, "num_gpus": 4}, r"ulysses_degree \(2\) x parallel.ring_degree \(2\) must equal"),
        ({"sp_size": 4, "num_gpus": 2}, r"= 4 is more than parallel.num_gpus \(2\)"),
        ({"enable_cfg_parallel": True, "sp_size": 2, "num_gpus": 2}, r"cfg degree \(2\) = 4 is more than"),
        ({"sp_size": 2, "num_gpus": 4}, "idle"),
        ({"tp_size": 3, "num_gpus": 2}, "must divide"),
        ({"tp_size": 2, "num_gpus": 2, "text_encoder_cpu_offload": True}, "layer-wise offload"),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
        ({"precision": "fp64"}, "model.precision='fp64'"),
        ({"attention_backend": "magic"}, "attention_backend"),
        ({"mask_strategy_file_path": "m.json", "enable_torch_compile": True}, "cannot be combined"),
        ({"vae_config": {"load_decoder": False}}, "load_decoder"),
        ({"vae_config": {"tile_size": 3}}, "vae_config.tile_size"),
        ({"bogus_option": 1}, "bogus_option"),
    ],
)
def test_impossible_options_are_rejected_with_the_key(options, match):
    with pytest.raises(UserError, match=match):
        run_config_from_options({"model_path": "tiny-wan-t2v", **options})


def test_parallel_degrees_are_derived_like_sglang():
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "num_gpus": 4, "ulysses_degree": 2, "ring_degree": 2})
    assert (run.parallel.sp_size, run.parallel.ulysses_degree, run.parallel.ring_degree) == (4, 2, 2)
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "num_gpus": 8, "enable_cfg_parallel": True})
    assert (run.parallel.sp_size, run.parallel.ulysses_degree, run.parallel.ring_degree) == (4, 4, 1)
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "num_gpus": 4, "sp_size": 4, "ring_degree": 2})
    assert (run.parallel.ulysses_degree, run.parallel.ring_degree) == (2, 2)


SEED_CONFIG = {
    "model_path": "tiny-wan-t2v",
    "prompt": "A beautiful woman in a red dress walking down a street",
    "output_path": "outputs/",
    "num_gpus": 1,
    "sp_size": 1,
    "tp_size": 1,
    "num_frames": 45,
    "height": 720,
    "width": 1280,
    "num_inference_steps": 6,
    "seed": 1024,
    "fps": 24,
    "precision": "bf16",
    "vae_precision": "fp16",
    "vae_tiling": True,
    "vae_sp": True,
    "vae_config": {"load_encoder": False, "load_decoder": True, "tile_sample_min_height": 256, "tile_sample_min_width": 256},
    "text_encoder_precisions": ["fp16"],
    "mask_strategy_file_path": None,
    "enable_torch_compile": False,
}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_seed_style_config_file_maps_every_key(tmp_path, suffix):
    file = tmp_path / f"config{suffix}"
    file.write_text(json.dumps(SEED_CONFIG) if suffix == ".json" else yaml.safe_dump(SEED_CONFIG))
    run = run_config_from_options(read_config_file(file))
    assert run.model.path == "tiny-wan-t2v"
    assert (run.sampling.num_frames, run.sampling.height, run.sampling.width) == (45, 720, 1280)
    assert (run.sampling.num_inference_steps, run.sampling.seed, run.sampling.fps) == (6, 1024, 24)
    assert (run.model.precision, run.vae.precision, run.model.text_encoder_precisions) == ("bf16", "fp16", ["fp16"])
    assert (run.vae.tiling, run.vae.sp, run.vae.load_encoder, run.vae.load_decoder) == (True, True, False, True)
    assert (run.vae.tile_sample_min_height, run.vae.tile_sample_min_width) == (256, 256)
    assert run.model.mask_strategy_file_path is None and run.model.enable_torch_compile is False
    assert run.output.path == "outputs/"


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML: line"):
        read_config_file(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"prompt": "x",}')
    with pytest.raises(UserError, match="not valid JSON"):
        read_config_file(bad_json)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("prompt: x\nnum_gpu: 2\n")
    with pytest.raises(UserError, match="unknown key 'num_gpu'"):
        read_config_file(unknown)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        read_config_file(not_mapping)


def test_model_path_resolution(tmp_path, tiny_wan_folder):
    from sgld.models.registry import choose_model

    assert choose_model("tiny-wan-t2v").group == "tiny_wan"
    assert choose_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers").group == "wan21"
    assert choose_model("wan22").group == "wan22"
    local = choose_model(str(tiny_wan_folder))
    assert local.group == "wan21" and local.values["model.path"] == str(tiny_wan_folder)
    with pytest.raises(UserError, match="not downloaded"):
        choose_model("some-org/not-downloaded-model", download=False)
    with pytest.raises(UserError, match="does not exist"):
        choose_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no model_index.json"):
        choose_model(str(tmp_path))
    with pytest.raises(UserError, match="unknown model 'nope'"):
        choose_model("nope")


def test_repo_id_resolves_from_the_local_hf_cache(tmp_path, monkeypatch, tiny_wan_folder):
    """A repo id in the Hugging Face cache loads from there (no network)."""
    import shutil

    import huggingface_hub.constants as hf_constants

    from sgld.models.registry import choose_model, resolve_model_folder

    cache = tmp_path / "hub"
    repo_dir = cache / "models--someone--tiny-wan"
    snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_wan_folder, snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    choice = choose_model("someone/tiny-wan")
    assert choice.group == "wan21" and choice.values["model.path"] == "someone/tiny-wan"
    assert resolve_model_folder("someone/tiny-wan") == snapshot


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SGLD_API_KEY", "from-env")
    assert run_config_from_options({"model_path": "tiny-wan-t2v"}).server.api_key == "from-env"
    assert run_config_from_options({"model_path": "tiny-wan-t2v", "api_key": "flag"}).server.api_key == "flag"
    monkeypatch.delenv("SGLD_API_KEY")
    assert run_config_from_options({"model_path": "tiny-wan-t2v"}).server.api_key is None


def _float_keys(node, prefix=""):
    """Every float field of the schema (Optional[float] too), as dotted keys."""
    import dataclasses
    import typing

    from sgld.config.schema import RunConfig

    node = node or RunConfig
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _float_keys(kind, f"{prefix}{f.name}.")
        elif kind is float or kind == typing.Optional[float]:
            yield f"{prefix}{f.name}"


FLOAT_KEYS = sorted(_float_keys(None))


def test_the_schema_has_float_fields_to_check():
    assert {"sampling.guidance_scale", "sampling.flow_shift", "cache.first_block_threshold", "server.lease_s"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_key_refuses_non_finite_numbers(key, value):
    with pytest.raises(ConfigError, match=r"=(nan|inf|-inf) is not a finite number") as info:
        finalize(compose_config(["model=tiny_wan"], {key: value}))
    # A model default feeds a sampling key: either key may be the one named, each with the value.
    assert info.value.param in (key, key.replace("model.sampling_defaults.", "sampling.")), str(info.value)
    assert f"{info.value.param}={value}" in str(info.value)


def test_non_finite_lora_scale_is_named():
    with pytest.raises(ConfigError, match=r"model.loras\[0\].scale=nan is not a finite number"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "lora_path": "x.safetensors", "lora_scale": float("nan")})


def test_check_finite_is_public_for_request_parsers():
    from sgld.config.finite import check_finite, finite_number

    assert finite_number("guidance_scale", 7.5) == 7.5
    with pytest.raises(ConfigError, match="guidance_scale=nan is not a finite number") as info:
        finite_number("guidance_scale", float("nan"))
    assert info.value.param == "guidance_scale"
    with pytest.raises(ConfigError, match=r"sampling.flow_shift=-inf"):
        check_finite({"sampling": {"flow_shift": float("-inf")}})


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", ".nan"])
def test_config_file_non_finite_value_is_refused(tmp_path, text):
    config = tmp_path / "run.yaml"
    config.write_text(f"model_path: tiny-wan-t2v\nguidance_scale: {text}\n")
    with pytest.raises(ConfigError, match="sampling.guidance_scale=.* is not a finite number"):
        run_config_from_options(read_config_file(config))
