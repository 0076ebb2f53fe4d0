"""VAE decode of video latents into uint8 frames."""

from __future__ import annotations

import torch

from sgld.models.loading import Placement
from sgld.request import Request
from sgld.stages.base import Stage


class WanVaeDecodingStage(Stage):
    """Un-normalises latents with the VAE's mean/std and decodes to (frames, H, W, 3) uint8."""

    name = "decode"

    def __init__(self, vae, placement: Placement):
        self.vae = vae
        self.placement = placement
        z = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        with self.placement.active("vae", self.vae) as vae:
            device, dtype = next(vae.parameters()).device, vae.dtype
            latents = req.latents.to(device=device, dtype=dtype)
            # Same arithmetic as diffusers (divide by 1/std) so results match bit for bit.
            latents = latents / (1.0 / self.std.to(device, dtype)) + self.mean.to(device, dtype)
            video = vae.decode(latents, return_dict=False)[0]
        req.frames = to_uint8_frames(video[0])
        return req


def to_uint8_frames(video: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """(C, F, H, W) in [-1, 1] -> numpy uint8 (F, H, W, C)."""
    video = (video.float() / 2 + 0.5).clamp(0, 1)
    return (video.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()
