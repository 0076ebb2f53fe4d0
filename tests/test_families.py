"""The family table: one spec per family, read the same way before loading (folder) and after (pipeline)."""

from __future__ import annotations

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


def test_the_folder_and_the_loaded_pipeline_read_the_same_constraints(tiny_wan_generator):
    assert FolderModel.of("tiny-wan-t2v").constraints == tiny_wan_generator.pipeline.constraints
    assert tiny_wan_generator.pipeline.constraints.temporal_factor == 4


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
