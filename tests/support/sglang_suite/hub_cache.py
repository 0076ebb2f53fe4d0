"""A local Hugging Face cache holding tiny stand-ins for the finishing models SGLang's cases fetch from the Hub.

SGLang's upscaling and frame-interpolation cases leave the model paths at their defaults, which sgld resolves to
``ai-forever/Real-ESRGAN`` (``RealESRGAN_x2.pth`` / ``RealESRGAN_x4.pth``) and ``elfgum/RIFE-4.22.lite``
(``flownet.pkl``). The suite runs offline, so it writes seeded random weights of the same architectures (small
widths for Real-ESRGAN, whose loader reads them from the file) in the Hub cache's layout, and points the server's
``HF_HUB_CACHE`` at it, as it hands tiny LoRA adapters for the Hub ones.
"""

from __future__ import annotations

from pathlib import Path

REVISION = "0" * 40  # the snapshot the cache's refs/main names


def _snapshot(cache: Path, repo: str) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def plant_finishing_weights(cache: Path) -> Path:
    """Write the tiny Real-ESRGAN (x2, x4) and RIFE weights into ``cache`` once; the cache folder."""
    import torch

    from sgld.finishing.realesrgan import RRDBNet
    from sgld.finishing.rife import IFNet

    esrgan = _snapshot(cache, "ai-forever/Real-ESRGAN")
    for scale in (2, 4):
        target = esrgan / f"RealESRGAN_x{scale}.pth"
        if not target.exists():
            torch.manual_seed(scale)
            torch.save({"params_ema": RRDBNet(scale, feat=8, blocks=1, grow=4).state_dict()}, target)
    rife = _snapshot(cache, "elfgum/RIFE-4.22.lite") / "flownet.pkl"
    if not rife.exists():
        torch.manual_seed(0)
        torch.save({f"module.{key}": value for key, value in IFNet().state_dict().items()}, rife)  # as RIFE saves it
    return cache
