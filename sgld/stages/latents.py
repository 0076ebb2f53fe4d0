"""Initial noise: the same numbers diffusers draws for the same seed."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from sgld.request import Request
from sgld.stages.base import Stage


class VideoLatentPreparationStage(Stage):
    """Gaussian latents of shape (1, C, (F-1)/t+1, H/s, W/s), drawn by a CPU generator.

    A CPU generator seeded with ``seed`` gives the same noise on every device, so a seed
    means the same video on a laptop and on a GPU server.
    """

    name = "prepare_latents"

    def __init__(self, channels: int, spatial_factor: int, temporal_factor: int, device: torch.device):
        self.channels = channels
        self.spatial_factor = spatial_factor
        self.temporal_factor = temporal_factor
        self.device = device

    def shape(self, req: Request) -> tuple[int, ...]:
        """Latent shape for the request's frames and size."""
        frames = (req.num_frames - 1) // self.temporal_factor + 1
        return (1, self.channels, frames, req.height // self.spatial_factor, req.width // self.spatial_factor)

    def forward(self, req: Request) -> Request:
        generator = torch.Generator("cpu").manual_seed(req.seed)
        req.latents = randn_tensor(self.shape(req), generator=generator, device=self.device, dtype=torch.float32)
        return req
