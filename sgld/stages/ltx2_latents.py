"""LTX-2's two latents, drawn as the reference draws them: the video's (with an optional clean first frame), then
the sound's, both packed into tokens; and the geometry every LTX-2 stage shares (packing, normalisation, sizes).

Every tensor operation here is the reference pipeline's own static helper (``LTX2Pipeline._pack_latents``,
``_normalize_latents``...), called in the reference's order, so sgld's latents equal its latents bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline as Reference
from diffusers.utils.torch_utils import randn_tensor

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.first_frame import input_image


@dataclass(frozen=True)
class LatentGrid:
    """One request's latent sizes: video frames x height x width, and audio latent frames."""

    frames: int
    height: int
    width: int
    audio_frames: int

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width


class Ltx2Latents:
    """The latent geometry of one LTX-2 model: shapes, packing and (de)normalisation of both latents."""

    def __init__(self, transformer, vae, audio_vae):
        self.transformer = transformer  # its RoPE modules compute positions from the grid (no weights involved)
        self.vae, self.audio_vae = vae, audio_vae
        self.spatial, self.temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        self.patch, self.patch_t = transformer.config.patch_size, transformer.config.patch_size_t
        self.channels = transformer.config.in_channels
        self.audio_channels = audio_vae.config.latent_channels
        self.audio_mel_bins = audio_vae.config.mel_bins // audio_vae.mel_compression_ratio
        # 16 kHz / hop 160 / 4x temporal compression = 25 audio latents a second in LTX-2.
        self.audio_per_second = (audio_vae.config.sample_rate / audio_vae.config.mel_hop_length
                                 / float(audio_vae.temporal_compression_ratio))

    def grid(self, num_frames: int, height: int, width: int, fps: float) -> LatentGrid:
        """The latent grid of ``num_frames`` frames of ``height`` x ``width`` at ``fps`` (the sound lasts as long)."""
        return LatentGrid((num_frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial,
                          round(num_frames / fps * self.audio_per_second))

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> video tokens (B, F*H*W, C)."""
        return Reference._pack_latents(latents, self.patch, self.patch_t)

    def unpack(self, tokens: torch.Tensor, grid: LatentGrid) -> torch.Tensor:
        """Video tokens -> (B, C, F, H, W)."""
        return Reference._unpack_latents(tokens, grid.frames, grid.height, grid.width, self.patch, self.patch_t)

    def normalize(self, latents: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        """VAE latents -> the DiT's; ``scaled``: with the VAE's scaling factor (the image-to-video reference
        normalises its first frame without it)."""
        scaling = self.vae.config.scaling_factor if scaled else 1.0
        return Reference._normalize_latents(latents, self.vae.latents_mean, self.vae.latents_std, scaling)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """The DiT's latents -> the VAE's (what the decoder and the latent upsampler take)."""
        return Reference._denormalize_latents(latents, self.vae.latents_mean, self.vae.latents_std,
                                              self.vae.config.scaling_factor)

    def pack_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, L, M) -> audio tokens (B, L, C*M)."""
        return Reference._pack_audio_latents(latents)

    def unpack_audio(self, tokens: torch.Tensor, grid: LatentGrid) -> torch.Tensor:
        """Audio tokens -> (B, C, L, M)."""
        return Reference._unpack_audio_latents(tokens, grid.audio_frames, num_mel_bins=self.audio_mel_bins)

    def normalize_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return Reference._normalize_audio_latents(tokens, self.audio_vae.latents_mean, self.audio_vae.latents_std)

    def denormalize_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return Reference._denormalize_audio_latents(tokens, self.audio_vae.latents_mean, self.audio_vae.latents_std)

    def model_kwargs(self, grid: LatentGrid, fps: float, device: torch.device) -> dict:
        """The DiT's inputs that follow the grid: sizes, fps, and RoPE positions computed once per request."""
        return {
            "num_frames": grid.frames, "height": grid.height, "width": grid.width, "fps": fps,
            "audio_num_frames": grid.audio_frames,
            "video_coords": self.transformer.rope.prepare_video_coords(1, grid.frames, grid.height, grid.width,
                                                                       device, fps=fps),
            "audio_coords": self.transformer.audio_rope.prepare_audio_coords(1, grid.audio_frames, device),
            # The reference passes the cross-modality sigma to the a2v / v2a modulation ("2.3 behaviour").
            "use_cross_timestep": True,
        }


def first_frame_mask(grid: LatentGrid, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 1, F, H, W): 1 on the first latent frame, the one an input image conditions."""
    mask = torch.zeros((1, 1, grid.frames, grid.height, grid.width), device=device, dtype=dtype)
    mask[:, :, 0] = 1.0
    return mask


class Ltx2LatentStage(Stage):
    """Video noise, then audio noise, from one CPU generator seeded with the request's seed (kept on the request:
    the two-stage refine draws its noise from it too).

    With an input image (``LTX2ImageToVideoPipeline``) the image is re-compressed as one H.264 frame (CRF 33 for
    Gemma 3 models, as the model was trained), resized, VAE-encoded (the distribution's mode: no draw) and put
    on the first latent frame, whose tokens stay clean (``req.clean_tokens``). Two-stage requests draw stage 1's
    latents at half the size.
    """

    name = "prepare_latents"

    def __init__(self, latents: Ltx2Latents, placement: Placement, image_crf: int):
        from diffusers.video_processor import VideoProcessor

        self.latents = latents
        self.placement = placement
        self.device = placement.device
        self.image_crf = image_crf
        self.video_processor = VideoProcessor(vae_scale_factor=latents.spatial, resample="bilinear")

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        geometry = self.latents
        height, width = (req.height // 2, req.width // 2) if req.two_stage else (req.height, req.width)
        grid = geometry.grid(req.num_frames, height, width, req.fps)
        req.generator = generator = torch.Generator("cpu").manual_seed(req.seed)
        shape = (1, geometry.channels, grid.frames, grid.height, grid.width)
        if req.image_path:
            first = self._first_frame(req, height, width).repeat(1, 1, grid.frames, 1, 1)
            mask = first_frame_mask(grid, self.device)
            noise = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
            latents = first * mask + noise * (1 - mask)
            req.clean_tokens = geometry.pack(mask).squeeze(-1)
        else:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        req.latents = geometry.pack(latents)
        audio_shape = (1, geometry.audio_channels, grid.audio_frames, geometry.audio_mel_bins)
        audio = randn_tensor(audio_shape, generator=generator, device=self.device, dtype=torch.float32)
        req.audio_latents = geometry.pack_audio(audio)
        req.model_kwargs = geometry.model_kwargs(grid, float(req.fps), self.device)
        return req

    def _first_frame(self, req: Request, height: int, width: int) -> torch.Tensor:
        """The input image as one normalised latent frame (1, C, 1, H, W), float32."""
        from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf
        from PIL import Image

        image = input_image(req)
        if self.image_crf:
            image = Image.fromarray(apply_image_conditioning_crf(np.array(image.convert("RGB")), self.image_crf))
        pixels = self.video_processor.preprocess(image, height=height, width=width)
        vae = self.latents.vae
        with self.placement.active("vae", vae):
            param = next(vae.parameters())
            encoded = vae.encode(pixels.to(device=param.device, dtype=vae.dtype).unsqueeze(2)).latent_dist.mode()
        return self.latents.normalize(encoded.to(device=self.device, dtype=torch.float32), scaled=False)
