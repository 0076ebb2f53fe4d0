"""Tiny models with a wider DiT, so GGUF quantization has whole blocks to work on.

The tiny DiTs are 24-32 wide: no Q4_K row (256 values) fits and the tiny Wan has no Q8_0 row (32)
either. ``widened_model`` copies a tiny model's folder and swaps its DiT for one of the same
architecture and config with 128-wide heads (256 hidden), so every block linear layer holds whole
Q8_0 and Q4_K blocks; the text encoders, VAE and scheduler are the tiny model's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Per DiT class: the config keys that widen it (2 heads of 128; rotary axes summing to the head size).
WIDER = {
    "WanTransformer3DModel": {"attention_head_dim": 128, "ffn_dim": 512},
    "FluxTransformer2DModel": {"attention_head_dim": 128, "axes_dims_rope": [16, 56, 56]},
    "ZImageTransformer2DModel": {"dim": 256, "axes_dims": [16, 56, 56]},
}


def widened_model(name: str, root: Path) -> Path:
    """``root/<name>-wide``: the tiny model ``name`` with its DiT widened (built once per ``root``)."""
    import diffusers
    import torch

    from sgld.model_builders.tiny import materialize_tiny

    folder = root / f"{name}-wide"
    if (folder / "model_index.json").is_file():
        return folder
    tmp = root / f".{name}-wide.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(materialize_tiny(name), tmp)
    config = json.loads((tmp / "transformer" / "config.json").read_text())
    cls = getattr(diffusers, config["_class_name"])
    config.update(WIDER[cls.__name__])
    torch.manual_seed(0)
    shutil.rmtree(tmp / "transformer")
    cls.from_config(config).save_pretrained(tmp / "transformer")
    tmp.rename(folder)
    return folder
