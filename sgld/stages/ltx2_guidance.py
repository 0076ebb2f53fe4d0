"""LTX-2's guidance, in x0 space, per modality: CFG, STG and modality isolation as deltas from the conditional
prediction, then the guidance rescale (``LTX2Pipeline.__call__``'s loop, in its order of operations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class GuidanceTerms:
    """The terms beside CFG, for (video, audio); an audio value of 0 already means the video's (the reference's
    ``audio_x or x``). ``stg_blocks``: the DiT blocks whose self-attention STG skips."""

    stg: tuple[float, float] = (0.0, 0.0)
    modality: tuple[float, float] = (1.0, 1.0)
    rescale: tuple[float, float] = (0.0, 0.0)
    stg_blocks: tuple[int, ...] = ()

    @classmethod
    def of(cls, config) -> "GuidanceTerms":
        """From an ``AudioVideoGuidance`` config, with the reference's audio fallbacks."""
        return cls((config.stg_scale, config.audio_stg_scale or config.stg_scale),
                   (config.modality_scale, config.audio_modality_scale or config.modality_scale),
                   (config.guidance_rescale, config.audio_guidance_rescale or config.guidance_rescale),
                   tuple(config.stg_blocks))

    @property
    def stg_on(self) -> bool:
        return self.stg[0] > 0 or self.stg[1] > 0

    @property
    def modality_on(self) -> bool:
        return self.modality[0] > 1 or self.modality[1] > 1


def to_x0(sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A flow-matching velocity as the clean sample it points to."""
    return sample - velocity * sigma


def to_velocity(sample: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A clean-sample prediction back as the velocity the scheduler steps."""
    return (sample - x0) / sigma


def _per_sample(values: Sequence[float], like: torch.Tensor):
    """One python float for a batch of one value (the reference's arithmetic), else (B, 1, 1) float32."""
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(-1, *[1] * (like.dim() - 1))


def rescale(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Blend ``guided`` by ``phi`` toward itself rescaled to ``cond``'s spread (per sample: std over the rest)."""
    dims = list(range(1, cond.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return phi * rescaled + (1 - phi) * guided


def guide(cond: torch.Tensor, uncond: Optional[torch.Tensor], stg: Optional[torch.Tensor],
          isolated: Optional[torch.Tensor], cfg_scales: Sequence[float], stg_scale: float, modality_scale: float,
          phi: float) -> torch.Tensor:
    """The guided x0 of one modality from its x0 predictions: conditional, unconditional (CFG; None: off),
    STG-perturbed and modality-isolated (None: that term is off); ``cfg_scales`` one per sample."""
    cfg = 0 if uncond is None else _per_sample([s - 1 for s in cfg_scales], cond) * (cond - uncond)
    stg_delta = 0 if stg is None else stg_scale * (cond - stg)
    modality_delta = 0 if isolated is None else (modality_scale - 1) * (cond - isolated)
    guided = cond + cfg + stg_delta + modality_delta
    return rescale(guided, cond, phi) if phi > 0 else guided
