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


class VideoVaeDecodingStage(Stage):
    """Decodes video latents to (frames, H, W, 3) uint8; subclasses say how latents are un-normalised.

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

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Latents (on the VAE's device and dtype) as the VAE's decoder expects them."""
        raise NotImplementedError

    def split_decode(self, vae, latents: torch.Tensor):  # pragma: no cover - abstract
        """The tiled decode shared by all ranks; the video on rank 0, None elsewhere."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not (self.parallel.is_main or self.split_tiles):
            return req  # the other ranks neither save nor return frames
        with self.placement.active("vae", self.vae) as vae:
            latents = self.unscale(req.latents.to(device=next(vae.parameters()).device, dtype=vae.dtype))
            if self.split_tiles:
                video = self.split_decode(vae, latents)
            else:
                video = vae.decode(latents, return_dict=False)[0]
        if video is not None:
            req.frames = to_uint8_images(video[0].transpose(0, 1))
        return req


class WanVaeDecodingStage(VideoVaeDecodingStage):
    """Wan: per-channel mean/std from the VAE config; VAE sp splits the tiles (bit-equal to one process)."""

    def __init__(self, vae, placement: Placement, split_tiles: bool = False):
        super().__init__(vae, placement, split_tiles)
        self.mean, self.std = latent_stats(vae)

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:
        device, dtype = latents.device, latents.dtype
        # Same arithmetic as diffusers (divide by 1/std) so results match bit for bit.
        return latents / (1.0 / self.std.to(device, dtype)) + self.mean.to(device, dtype)

    def split_decode(self, vae, latents: torch.Tensor):
        from sgld.parallel.vae import parallel_tiled_decode

        return parallel_tiled_decode(vae, latents, self.parallel)


class HunyuanVaeDecodingStage(VideoVaeDecodingStage):
    """HunyuanVideo: one scaling factor; VAE sp shares the decoder calls of its tiled decode."""

    def unscale(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.vae.config.scaling_factor

    def split_decode(self, vae, latents: torch.Tensor):
        from sgld.parallel.vae import round_robin_decode

        return round_robin_decode(vae, latents, self.parallel)


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
