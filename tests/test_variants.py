"""The model-variant table (sgld/variants.py) agrees with everything that names a model.

Every row's conf file, family, builder and full-size architecture; every conf file, family
and full-size architecture has its row. Adding a family touches its row, not these tables.
"""

from __future__ import annotations

import pytest
import yaml

from sgld.families import FAMILIES, family_of_index
from sgld.models.registry import CONF_MODEL_DIR, choose_model
from sgld.variants import BUILTIN_MODELS, VARIANTS, VARIANTS_BY_NAME

TINY = [v for v in VARIANTS if v.tiny]


def test_names_and_conf_files_are_one_to_one():
    assert len(VARIANTS_BY_NAME) == len(VARIANTS), "a name appears twice"
    confs = {file.stem: yaml.safe_load(file.read_text()) for file in CONF_MODEL_DIR.glob("*.yaml")}
    assert sorted(v.conf for v in VARIANTS) == sorted(confs), "each conf/model file is exactly one variant's"
    for variant in VARIANTS:
        conf = confs[variant.conf]
        assert conf["name"] == variant.conf and conf["path"] == variant.name, variant
        assert choose_model(variant.name, download=False).group == variant.conf, variant
        assert variant.family in FAMILIES, variant


def test_every_family_has_a_tiny_model_and_a_default_model_file_of_its_own():
    for spec in FAMILIES.values():
        assert any(v.family == spec.name for v in TINY), f"{spec.name} has no tiny model: nothing tests it on CPU"
        for conf in filter(None, (spec.default_model, spec.default_model_two_experts)):
            owner = next(v for v in VARIANTS if v.conf == conf)
            assert owner.family == spec.name and not owner.tiny, (spec.name, conf)


def test_the_full_size_architectures_are_the_marked_rows_and_of_their_family():
    from sgld.model_builders.full_size import FULL_SIZE_MODELS

    assert sorted(FULL_SIZE_MODELS) == sorted(v.name for v in VARIANTS if v.full_size)
    for repo, model in FULL_SIZE_MODELS.items():
        assert family_of_index(model.model_index()).name == VARIANTS_BY_NAME[repo].family, repo


def test_builtin_names_are_the_tiny_rows_and_build_through_their_builder():
    from sgld.model_builders.tiny import TINY_BUILDERS

    assert BUILTIN_MODELS == {v.name: v.conf for v in TINY}
    assert sorted(TINY_BUILDERS) == sorted(BUILTIN_MODELS)


@pytest.mark.parametrize("variant", TINY, ids=lambda v: v.name)
def test_each_tiny_model_builds_and_is_described_as_its_family(sgld_home, variant):
    """Built (a real diffusers folder), described before loading as its row's family, and its
    conf file's defaults pass that family's checks (what the CLI and the server do first)."""
    from sgld.models.folder_model import FolderModel
    from sgld.run_config import run_config_from_options
    from sgld.runner import check_before_loading

    model = FolderModel.of(variant.name)
    assert model.spec.name == variant.family
    options = {"model_path": variant.name, "prompt": "a fox"}
    if model.spec.image_mode.value == "required":
        options["image_path"] = str(_input_image(sgld_home))
    check_before_loading(run_config_from_options(options))


def _input_image(folder):
    from PIL import Image

    path = folder / "variant-input.png"
    if not path.exists():
        Image.new("RGB", (64, 64), (200, 40, 40)).save(path)
    return path


def test_the_readme_lists_every_variant():
    """README's model table and its tiny-model list name every row (a new variant is documented)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("## Supported models"):]
    missing = [v.name for v in VARIANTS if f"`{v.name}`" not in table or f"`{v.conf}`" not in table]
    assert not missing, f"README's Supported models table lacks {missing}"
    setup = readme[readme.index("## Set-up"):readme.index("## Generate")]
    assert not [v.name for v in TINY if f"`{v.name}`" not in setup]
