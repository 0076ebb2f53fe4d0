"""VAE decode of latents into uint8 frames."""

from __future__ import annotations

import functools

import torch

from sgld.models.placement import Placement
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.latent_norm import LatentNorm


class VideoVaeDecodingStage(Stage):
    """Decodes video latents to (frames, H, W, 3) uint8; subclasses say how VAE sp splits the decode.

    In a parallel run only rank 0 decodes, unless ``split_tiles`` (``vae.sp``) spreads the
    tiles of the tiled decode over all ranks; other ranks end with ``frames = None``.
    """

    name = "decode"

    def __init__(self, vae, placement: Placement, parallel: ParallelState, split_tiles: bool = False):
        self.vae = vae
        self.placement = placement
        self.parallel = parallel
        self.split_tiles = split_tiles and parallel.world_size > 1
        self.norm = LatentNorm.of(vae)

    def split_decode(self, vae, latents: torch.Tensor):  # pragma: no cover - abstract
        """The tiled decode shared by all ranks; the video on rank 0, None elsewhere."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not (self.parallel.is_main or self.split_tiles):
            return req  # the other ranks neither save nor return frames
        with self.placement.active("vae", self.vae) as vae:
            latents = self.norm.denormalize(req.latents.to(device=next(vae.parameters()).device, dtype=vae.dtype))
            if self.split_tiles:
                video = self.split_decode(vae, latents)
            else:
                video = vae.decode(latents, return_dict=False)[0]
        if video is not None:
            req.frames = to_uint8_images(video[0].transpose(0, 1))
        return req


class WanVaeDecodingStage(VideoVaeDecodingStage):
    """Wan: VAE sp splits the tiles (bit-equal to one process)."""

    def split_decode(self, vae, latents: torch.Tensor):
        from sgld.parallel.vae import parallel_tiled_decode

        return parallel_tiled_decode(vae, latents, self.parallel)


class HunyuanVaeDecodingStage(VideoVaeDecodingStage):
    """HunyuanVideo: VAE sp shares the decoder calls of its tiled decode."""

    def split_decode(self, vae, latents: torch.Tensor):
        from sgld.parallel.vae import round_robin_decode

        return round_robin_decode(vae, latents, self.parallel)


def to_uint8_images(images: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """(N, C, H, W) in [-1, 1] -> numpy uint8 (N, H, W, C)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


class PackedImageDecodingStage(Stage):
    """Unpacks 2x2-packed image latents (FLUX, Qwen-Image, FLUX.2), un-normalises and decodes the batch's images."""

    name = "decode"

    def __init__(self, vae, placement: Placement, vae_scale_factor: int):
        self.vae = vae
        self.placement = placement
        self.vae_scale_factor = vae_scale_factor

    @functools.cached_property
    def norm(self) -> LatentNorm:
        """The VAE's latent normalisation (read once, when first needed)."""
        return LatentNorm.of(self.vae)

    def unpack(self, latents: torch.Tensor, req: Request) -> torch.Tensor:  # pragma: no cover - abstract
        """Tokens (B, N, C*4) -> the decoder's latent layout."""
        raise NotImplementedError

    def decoder_latents(self, latents: torch.Tensor, vae) -> torch.Tensor:
        """Unpacked denoised latents (on the VAE's device and dtype) -> what the decoder takes."""
        return self.norm.denormalize(latents)

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    @torch.no_grad()
    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        # One decoder call for the batch's images (same size: they share a batch).
        latents = torch.cat([self.unpack(req.latents, req) for req in reqs])
        with self.placement.active("vae", self.vae) as vae:
            latents = self.decoder_latents(latents.to(device=next(vae.parameters()).device, dtype=vae.dtype), vae)
            images = vae.decode(latents, return_dict=False)[0]
        frames = to_uint8_images(images if images.dim() == 4 else images[:, :, 0])  # Qwen's VAE decodes one frame
        for i, req in enumerate(reqs):
            req.frames = frames[i : i + 1]
        return reqs


class FluxVaeDecodingStage(PackedImageDecodingStage):
    """FLUX: (B, C, H, W) latents."""

    def unpack(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

        return FluxPipeline._unpack_latents(latents, req.height, req.width, self.vae_scale_factor)


class QwenVaeDecodingStage(PackedImageDecodingStage):
    """Qwen-Image: (B, C, 1, H, W) latents for its video-style VAE."""

    def unpack(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

        return QwenImagePipeline._unpack_latents(latents, req.height, req.width, self.vae_scale_factor)


class ImageVaeDecodingStage(PackedImageDecodingStage):
    """Unpacked (B, C, H, W) latents (Z-Image): nothing to unpack."""

    def unpack(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        return latents
