"""How each guidance kind (``FamilySpec.guidance``) combines a step's conditional and unconditional predictions."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from sgld.families import GuidanceKind


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """uncond + scale * (cond - uncond), with each sample's own scale."""
    if len(set(scales)) == 1:
        return uncond + scales[0] * (cond - uncond)
    scale = torch.tensor(scales, device=cond.device, dtype=torch.float32).view(-1, *[1] * (cond.dim() - 1))
    return (uncond + scale * (cond - uncond)).to(cond.dtype)


def true_cfg(cond: torch.Tensor, uncond: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """Qwen-Image's: CFG rescaled, token by token, to the conditional prediction's norm."""
    combined = cfg(cond, uncond, scales)
    return combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))


def cfg_extra(cond: torch.Tensor, uncond: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """Z-Image's cond + s (cond - uncond), which is CFG with scale 1 + s."""
    return cfg(cond, uncond, [scale + 1.0 for scale in scales])


# Guidance-distilled families (GuidanceKind.embedded) run one branch: nothing to combine.
RULES: dict[GuidanceKind, Callable[[torch.Tensor, torch.Tensor, Sequence[float]], torch.Tensor]] = {
    GuidanceKind.cfg: cfg, GuidanceKind.true_cfg: true_cfg, GuidanceKind.cfg_extra: cfg_extra,
}
