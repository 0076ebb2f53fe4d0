"""Tiny LoRA adapters made offline with PEFT on a tiny model's DiT, saved in diffusers' layout (or Kohya's, for Wan)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

# Attention projections every family's DiT has (diffusers' Attention); FLUX/Qwen/Hunyuan have more, Wan has these.
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


def make_lora(model_folder: Path, out: Path, seed: int, rank: int = 4, b_scale: float = 1.0,
              subfolder: str = "transformer") -> Path:
    """Train nothing: random A/B matrices (B scaled by ``b_scale``) on the attention projections; the saved file."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sgld.families import family_of_index
    from sgld.models.registry import read_model_index

    index = read_model_index(model_folder)
    spec = family_of_index(index)
    transformer = getattr(diffusers, index[subfolder][1]).from_pretrained(model_folder, subfolder=subfolder)
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES, init_lora_weights=False))
    state = get_peft_model_state_dict(transformer)
    state = {k: v * b_scale if "lora_B" in k else v for k, v in state.items()}
    # The family's loader mixin writes its own layout (MiniMax-H3's transformer_ref layers under their own prefix).
    saver = getattr(importlib.import_module("diffusers.loaders.lora_pipeline"), spec.lora_loader)
    layers = "transformer_ref_lora_layers" if subfolder == "transformer_ref" else "transformer_lora_layers"
    saver.save_lora_weights(out, **{layers: state})
    return out / "pytorch_lora_weights.safetensors"


# diffusers' Wan layer names -> the original (Kohya / ComfyUI) ones.
_WAN_KOHYA = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
              "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
              "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o"}


def to_kohya_wan(file: Path, out: Path) -> Path:
    """The same Wan adapter in the original layout (``diffusion_model.blocks.N.self_attn.q.lora_down``)."""
    from safetensors.torch import load_file, save_file

    converted = {}
    for key, value in load_file(str(file)).items():
        layer, _, kind = key.removeprefix("transformer.").partition(".lora_")
        block, _, name = layer.partition(".")[2].partition(".")
        new = f"diffusion_model.blocks.{block}.{_WAN_KOHYA[name]}"
        converted[f"{new}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value.contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(converted, str(out))
    return out
