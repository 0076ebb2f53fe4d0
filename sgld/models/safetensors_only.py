"""The weights policy: safetensors only, because unpickling a checkpoint can run arbitrary code."""

from __future__ import annotations

from pathlib import Path

from sgld.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(component: Path) -> None:
    """Refuse a weights folder without safetensors files before any loader can fall back to unpickling."""
    if any(component.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in component.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f"only pickle weights ({', '.join(pickled)})" if pickled else "no .safetensors weights"
    raise UserError(
        f"{component} has {found}; sgld loads safetensors only, because unpickling can run arbitrary code. "
        "Convert the checkpoint to safetensors (safetensors.torch.save_file) or use the model's safetensors release",
        param="model_path",
    )
