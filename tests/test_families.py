"""The family table: one spec per family, read the same way before loading (folder) and after (pipeline)."""

from __future__ import annotations

import json

import pytest

from sgld.errors import UserError
from sgld.families import FAMILIES, family_of_index
from sgld.models.folder_model import FolderModel
from sgld.run_config import run_config_from_options
from sgld.variants import VARIANTS

TINY_FAMILIES = {v.name: v.family for v in VARIANTS if v.tiny}


def test_every_spec_names_a_pipeline_that_declares_it():
    for spec in FAMILIES.values():
        assert spec.pipeline_class().spec is spec, spec.name


def test_folders_map_to_their_family(sgld_home):
    for model, family in TINY_FAMILIES.items():
        assert FolderModel.of(model).spec.name == family, model
    with pytest.raises(UserError, match="unsupported pipeline class 'AcmePipeline'; sgld runs: Flux2KleinPipeline, Flux2Pipeline, FluxPipeline"):
        family_of_index({"_class_name": "AcmePipeline"})


@pytest.mark.parametrize("model", ["tiny-wan-t2v", "tiny-wan22-ti2v", "tiny-wan21-i2v", "tiny-hunyuan"])
def test_the_folder_and_the_loaded_pipeline_read_the_same_constraints(generators, model):
    """What a multi-rank server validates against (the folder's description) is what the loaded model says."""
    assert FolderModel.of(model).constraints == generators(model).pipeline.constraints
    assert generators(model).pipeline.constraints.temporal_factor == 4


def test_vae_sp_without_a_vae_split_is_refused_before_any_weight_loads(sgld_home, monkeypatch):
    from sgld import DiffGenerator
    from sgld.models import components
    from sgld.runner import check_before_loading

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(components, "load_components", no_loading)
    run = run_config_from_options({"model_path": "tiny-flux", "prompt": "a fox", "vae_sp": True})
    message = "vae_sp: splitting the VAE decode across ranks is supported for .*hunyuan, not flux"
    with pytest.raises(UserError, match=message):
        check_before_loading(run)
    with pytest.raises(UserError, match=message):
        DiffGenerator.from_run_config(run)


def test_conflicting_dit_offload_switches_are_an_error_naming_both():
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "dit_layerwise_offload": True,
                                   "dit_cpu_offload": False})
    assert run.offload.dit == "layerwise"  # an off switch leaves the key to the one that is on
    assert run_config_from_options({"model_path": "tiny-wan-t2v", "dit_cpu_offload": False}).offload.dit == "none"
    with pytest.raises(UserError, match="dit_cpu_offload and dit_layerwise_offload cannot be combined"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "dit_cpu_offload": True, "dit_layerwise_offload": True})


def test_position_limits_are_the_edge_of_the_dits_rotary_tables(sgld_home):
    """The largest size the pre-load check lets through runs the DiT's rotary embedding; one step past it fails."""
    import torch
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from diffusers.models.transformers.transformer_z_image import RopeEmbedder

    wan = FolderModel.of("tiny-wan-t2v")
    dit = wan.spec.constraints_in_folder(wan.folder)
    limit = dit.positions
    config = json.loads((wan.folder / "transformer" / "config.json").read_text())
    rope = WanRotaryPosEmbed(config["attention_head_dim"], config["patch_size"], config["rope_max_seq_len"])
    latent = lambda frames, height, width: torch.zeros(1, 1, (frames - 1) // 4 + 1, height // 8, width // 8)  # noqa: E731
    rope(latent(limit.max_frames, limit.max_height, limit.max_width))
    for past in (latent(limit.max_frames + 4, 64, 64), latent(9, limit.max_height + 16, 64),
                 latent(9, 64, limit.max_width + 16)):
        with pytest.raises(RuntimeError):
            rope(past)

    z = FolderModel.of("tiny-z-image")
    limit = z.constraints.positions
    config = json.loads((z.folder / "transformer" / "config.json").read_text())
    rope = RopeEmbedder(config["rope_theta"], config["axes_dims"], config["axes_lens"])
    patches = lambda height, width: torch.tensor([[0, height // 16 - 1, width // 16 - 1]])  # noqa: E731
    rope(patches(limit.max_height, limit.max_width))
    with pytest.raises(IndexError):
        rope(patches(limit.max_height + 16, 64))


def test_ulysses_degree_is_checked_against_every_experts_heads(sgld_home):
    run = run_config_from_options({"model_path": "tiny-wan22-t2v", "num_gpus": 4, "ulysses_degree": 4})
    model = FolderModel.of("tiny-wan22-t2v")
    with pytest.raises(UserError, match="ulysses_degree=4 must divide the 2 attention heads") as info:
        model.spec.check_run(run, model.folder)
    assert info.value.param == "ulysses_degree"
    model.spec.check_run(run_config_from_options({"model_path": "tiny-wan22-t2v", "num_gpus": 2, "ulysses_degree": 2}),
                         model.folder)


def test_cfg_parallel_is_refused_where_guidance_is_a_model_input(sgld_home):
    """FLUX.1, FLUX.2 [dev] and HunyuanVideo run one forward a step: a CFG-parallel rank would only repeat it."""
    for model, instead in (("tiny-flux", "--ulysses-degree"), ("tiny-flux2", "--ulysses-degree"),
                           ("tiny-hunyuan", "run it on one GPU")):
        run = run_config_from_options({"model_path": model, "num_gpus": 2, "enable_cfg_parallel": True})
        spec = FolderModel.of(model).spec
        with pytest.raises(UserError, match=f"cfg_parallel: {spec.name} models are guidance-distilled.*{instead}") as info:
            spec.check_run(run)
        assert info.value.param == "cfg_parallel"
    FolderModel.of("tiny-wan-t2v").spec.check_run(  # CFG families split their branches
        run_config_from_options({"model_path": "tiny-wan-t2v", "num_gpus": 2, "enable_cfg_parallel": True}))
