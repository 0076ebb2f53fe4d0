"""Model registry: which config file a model path selects and where its folder is (the family: sgld.families).

Importing this module does not import torch: the CLI resolves ``--model-path`` to a
``conf/model`` file before anything heavy loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from sgld.errors import UserError
from sgld.families import default_model_of_index
from sgld.models.hub import looks_like_repo_id, repo_folder
from sgld.variants import BUILTIN_MODELS

CONF_MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


@dataclass(frozen=True)
class ModelChoice:
    """The Hydra model file a path selects, and the key values to set on top of it."""

    group: str
    values: dict


@lru_cache(maxsize=1)
def model_files() -> dict[str, dict]:
    """Every ``conf/model/*.yaml`` by file name (name, path, defaults)."""
    out = {}
    for file in sorted(CONF_MODEL_DIR.glob("*.yaml")):
        out[file.stem] = yaml.safe_load(file.read_text()) or {}
    return out


def read_model_index(folder: Path) -> dict:
    """The folder's model_index.json, or a UserError saying why it is not a model folder."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"'{folder}' is not a diffusers model folder: it has no model_index.json", param="model_path")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"'{index}' is not valid JSON: {exc}", param="model_path") from None


def choose_model(model_path: str, download: bool = True) -> ModelChoice:
    """Map ``--model-path`` to a ``conf/model`` file plus overrides (no weights are read).

    Order: a model file's name or its ``path`` (built-in names and the repo ids we ship
    configs for), then a local folder, then a Hugging Face repo id: from the local cache,
    else downloaded (unless ``download`` is off).
    """
    files = model_files()
    if model_path in files:
        return ModelChoice(model_path, {})
    if model_path.startswith("random:"):  # a released architecture with random weights (benchmarks)
        from sgld.model_builders.random_weights import full_size_model

        repo, model = full_size_model(model_path)
        group = next((g for g, data in files.items() if data.get("path") == repo), None)
        return ModelChoice(group or default_model_of_index(model.model_index(), model_path), {"model.path": model_path})
    for group, data in files.items():
        if data.get("path") == model_path:
            return ModelChoice(group, {})
    folder = Path(model_path).expanduser()
    if folder.is_dir():
        index = read_model_index(folder)
        group = default_model_of_index(index, str(folder))
        return ModelChoice(group, {"model.path": str(folder.resolve()), "model.name": folder.resolve().name})
    if looks_like_repo_id(model_path):
        group = default_model_of_index(read_model_index(repo_folder(model_path, download)), model_path)
        return ModelChoice(group, {"model.path": model_path, "model.name": model_path})
    if model_path.startswith((".", "/", "~")) or model_path.count("/") > 1:
        raise UserError(f"model folder {model_path!r} does not exist", param="model_path")
    raise UserError(
        f"unknown model {model_path!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), "
        f"a model config ({', '.join(files)}), an existing folder, or a Hugging Face repo id",
        param="model_path",
    )


def resolve_model_folder(model_path: str, download: bool = True) -> Path:
    """The local folder holding ``model_path``'s weights (building a tiny model, or downloading a repo id, if needed)."""
    if model_path in BUILTIN_MODELS:
        from sgld.model_builders.tiny import materialize_tiny

        return materialize_tiny(model_path)
    if model_path.startswith("random:"):
        from sgld.model_builders.random_weights import materialize_random

        return materialize_random(model_path)
    folder = Path(model_path).expanduser()
    if folder.is_dir():
        read_model_index(folder)
        return folder.resolve()
    if looks_like_repo_id(model_path):
        return repo_folder(model_path, download)
    raise UserError(f"model folder {model_path!r} does not exist", param="model_path")
