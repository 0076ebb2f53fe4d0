"""VAE decode of video latents into uint8 frames."""

from __future__ import annotations

import torch

from sgld.models.loading import Placement
from sgld.request import Request
from sgld.stages.base import Stage


def latent_stats(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of a Wan-style VAE's latents, shaped (1, C, 1, 1, 1) for video latents."""
    z = vae.config.z_dim
    return (torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1),
            torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1))


class WanVaeDecodingStage(Stage):
    """Un-normalises latents with the VAE's mean/std and decodes to (frames, H, W, 3) uint8.

    In a parallel run only rank 0 decodes, unless ``split_tiles`` (``vae.sp``) spreads the
    tiles of the tiled decode over all ranks; other ranks end with ``frames = None``.
    """

    name = "decode"

    def __init__(self, vae, placement: Placement, split_tiles: bool = False):
        from sgld.parallel.state import current

        self.vae = vae
        self.placement = placement
        self.parallel = current()
        self.split_tiles = split_tiles and self.parallel.world_size > 1
        self.mean, self.std = latent_stats(vae)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not (self.parallel.is_main or self.split_tiles):
            return req  # the other ranks neither save nor return frames
        with self.placement.active("vae", self.vae) as vae:
            device, dtype = next(vae.parameters()).device, vae.dtype
            latents = req.latents.to(device=device, dtype=dtype)
            # Same arithmetic as diffusers (divide by 1/std) so results match bit for bit.
            latents = latents / (1.0 / self.std.to(device, dtype)) + self.mean.to(device, dtype)
            if self.split_tiles:
                from sgld.parallel.vae import parallel_tiled_decode

                video = parallel_tiled_decode(vae, latents, self.parallel)
            else:
                video = vae.decode(latents, return_dict=False)[0]
        if video is not None:
            req.frames = to_uint8_images(video[0].transpose(0, 1))
        return req


class HunyuanVaeDecodingStage(Stage):
    """Undoes the VAE's scaling factor and decodes video latents to (frames, H, W, 3) uint8.

    ``split_tiles`` (``vae.sp``): in a parallel run the tiled decode's tiles are spread over
    the ranks; only rank 0 keeps the frames.
    """

    name = "decode"

    def __init__(self, vae, placement: Placement, split_tiles: bool = False):
        from sgld.parallel.state import current

        self.vae = vae
        self.placement = placement
        self.parallel = current()
        self.split_tiles = split_tiles and self.parallel.world_size > 1

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not (self.parallel.is_main or self.split_tiles):
            return req
        with self.placement.active("vae", self.vae) as vae:
            device = next(vae.parameters()).device
            latents = req.latents.to(device=device, dtype=vae.dtype) / vae.config.scaling_factor
            if self.split_tiles:
                from sgld.parallel.vae import round_robin_decode

                video = round_robin_decode(vae, latents, self.parallel)
            else:
                video = vae.decode(latents, return_dict=False)[0]
        if video is not None:
            req.frames = to_uint8_images(video[0].transpose(0, 1))
        return req


def to_uint8_images(images: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """(N, C, H, W) in [-1, 1] -> numpy uint8 (N, H, W, C)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


class FluxVaeDecodingStage(Stage):
    """Unpacks FLUX latents, undoes the VAE's scaling/shift and decodes one image."""

    name = "decode"

    def __init__(self, vae, placement: Placement, vae_scale_factor: int):
        self.vae = vae
        self.placement = placement
        self.vae_scale_factor = vae_scale_factor

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

        latents = FluxPipeline._unpack_latents(req.latents, req.height, req.width, self.vae_scale_factor)
        with self.placement.active("vae", self.vae) as vae:
            device = next(vae.parameters()).device
            latents = latents.to(device=device, dtype=vae.dtype)
            latents = latents / vae.config.scaling_factor + vae.config.shift_factor
            image = vae.decode(latents, return_dict=False)[0]
        req.frames = to_uint8_images(image)
        return req


class QwenVaeDecodingStage(Stage):
    """Unpacks Qwen-Image latents to one frame, un-normalises with the VAE's mean/std, decodes."""

    name = "decode"

    def __init__(self, vae, placement: Placement, vae_scale_factor: int):
        self.vae = vae
        self.placement = placement
        self.vae_scale_factor = vae_scale_factor
        self.mean, self.std = latent_stats(vae)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

        latents = QwenImagePipeline._unpack_latents(req.latents, req.height, req.width, self.vae_scale_factor)
        with self.placement.active("vae", self.vae) as vae:
            device, dtype = next(vae.parameters()).device, vae.dtype
            latents = latents.to(device=device, dtype=dtype)
            latents = latents / (1.0 / self.std.to(device, dtype)) + self.mean.to(device, dtype)
            image = vae.decode(latents, return_dict=False)[0][:, :, 0]
        req.frames = to_uint8_images(image)
        return req
