"""Load a diffusers-layout folder's components with the run's precisions (safetensors only)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.model_builders.random_weights import LIBRARIES
from sgld.models.placement import cpu_homed_components
from sgld.models.registry import read_model_index
from sgld.models.safetensors_only import require_safetensors

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a torch device (auto, cpu, cuda, cuda:1)", param="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} asked for, but no CUDA GPU is available here", param="device")
    return device


def component_specs(index: dict) -> list[tuple[str, str, str]]:
    """(name, library, class) for every component entry of model_index.json that is present."""
    specs = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2:
            continue
        library, class_name = spec
        if library is None or class_name is None:
            continue
        specs.append((name, library, class_name))
    return specs


def component_dtype(name: str, run: RunConfig, text_encoders: list[str]) -> torch.dtype | None:
    # LTX-2's text connectors run with the DiT; its audio VAE and vocoder decode with the video VAE.
    if name.startswith("transformer") or name == "connectors":
        return DTYPES[run.model.precision]
    if name in ("vae", "audio_vae", "vocoder"):
        return DTYPES[run.vae.precision]
    if name == "image_encoder":
        return DTYPES[run.model.image_encoder_precision]
    if name in text_encoders:
        precisions = run.model.text_encoder_precisions
        i = text_encoders.index(name)
        return DTYPES[precisions[i] if precisions else run.model.precision]
    return None


def load_components(folder: Path, run: RunConfig, device: torch.device | None = None,
                    skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Instantiate every component of ``folder`` with the run's precisions (on the CPU).

    ``skip``: components the run does not use (their family's ``unloaded_components``: MiniMax-H3's other
    transformer partition); their entries are None.

    Weights load from safetensors only; a folder with only pickle weights fails to load.
    A ``random:`` model's folder has configs only: its weights are made on ``device``
    (components the run offloads then move to the CPU).
    Non-component entries of model_index.json (``boundary_ratio`` ...) are returned too.
    """
    from sgld.model_builders.random_weights import build_random_module, is_random_folder

    index = read_model_index(folder)
    random_weights = is_random_folder(folder)
    offloaded = cpu_homed_components(run)
    specs = component_specs(index)
    text_encoders = [name for name, _, _ in specs if name.startswith("text_encoder")]
    if run.model.text_encoder_precisions and len(run.model.text_encoder_precisions) != len(text_encoders):
        raise UserError(
            f"model.text_encoder_precisions has {len(run.model.text_encoder_precisions)} entries but "
            f"{folder.name} has {len(text_encoders)} text encoder(s) ({', '.join(text_encoders)})",
            param="text_encoder_precisions",
        )
    dit_weights = checked_dit_weights(folder, run, index)  # before any weights load
    components: dict[str, Any] = {k: v for k, v in index.items() if not isinstance(v, list) and not k.startswith("_")}
    components.update(modular_config(folder))
    for name, library, class_name in specs:
        if name in skip:
            continue  # not run: the entry stays None (below)
        if library not in LIBRARIES:
            raise UserError(f"component {name!r} comes from {library!r}; sgld loads {', '.join(LIBRARIES)} only")
        cls = getattr(importlib.import_module(LIBRARIES[library]), class_name)
        dtype = component_dtype(name, run, text_encoders)
        sub = folder / name
        if not sub.is_dir():
            raise UserError(f"model folder {folder} lists component {name!r} but has no {name}/ folder")
        if name == "transformer" and dit_weights is not None:
            from sgld.models.gguf import load_gguf_dit, quantized_layers

            module = load_gguf_dit(dit_weights, folder, name, dtype)
            log.info("dit_weights %s: %d quantized linear layers in %s, computing in %s", dit_weights.name,
                     quantized_layers(module), class_name, run.model.precision)
        elif dtype is not None and random_weights:
            target = device or torch.device("cpu")
            module = build_random_module(library, cls, sub, dtype, target, seed=len(components))
            if name in offloaded and target.type != "cpu":
                module.to("cpu")
        elif dtype is not None:
            require_safetensors(sub)
            if library != "transformers":
                module = cls.from_pretrained(folder, subfolder=name, torch_dtype=dtype, use_safetensors=True)
            else:
                module = cls.from_pretrained(sub, dtype=dtype, use_safetensors=True)
            module.eval().requires_grad_(False)
        elif library == "diffusers":  # scheduler
            module = cls.from_pretrained(folder, subfolder=name)
        elif class_name == "Qwen3VLProcessor":  # MiniMax-H3: its video half needs torchvision, which is not used
            from sgld.model_builders.qwen3vl_processor import load_qwen3vl_processor

            module = load_qwen3vl_processor(sub)
        elif class_name == "Qwen2VLProcessor":
            from sgld.processors import load_qwen2vl_processor

            module = load_qwen2vl_processor(sub)
        elif class_name == "PixtralProcessor":  # FLUX.2 [dev] reads text only: its tokenizer and chat template
            from transformers import AutoTokenizer

            module = AutoTokenizer.from_pretrained(sub)
        else:  # tokenizer / processor
            module = cls.from_pretrained(sub)
        components[name] = module
    for name, spec in index.items():
        if isinstance(spec, list) and name not in components:
            components[name] = None
    return components


def modular_config(folder: Path) -> dict[str, Any]:
    """The pipeline config of a modular pipeline's folder (``modular_model_index.json``'s plain keys: MiniMax-H3's
    canvas sizes), none for other folders."""
    import json

    path = folder / "modular_model_index.json"
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_") and not isinstance(v, list)}


def checked_dit_weights(folder: Path, run: RunConfig, index: dict) -> Path | None:
    """The GGUF file ``model.dit_weights`` names (downloaded if it must be), its header held to the folder's DiT."""
    if not run.model.dit_weights:
        return None
    from sgld.families import family_of_index
    from sgld.models.gguf import check_dit_weights, dit_weights_path, read_header

    path = dit_weights_path(run.model.dit_weights, run.model.download)
    check_dit_weights(read_header(path), folder, "transformer", family_of_index(index, str(folder)).name)
    return path
