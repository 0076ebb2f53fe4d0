"""MiniMax-H3's decoders, with its VAE conventions: video rows unpatchified, per-channel de-normalised, decoded by
the (tiled) video VAE into ImageNet-normalised pixels and un-normalised; audio rows (channel-major, the two stereo
channels as the mono audio VAE's batch) de-normalised and decoded to a 32 kHz stereo waveform. diffusers'
``MiniMaxH3AfterDenoiseStep``, ``MiniMaxH3VideoDecodeStep`` and ``MiniMaxH3AudioDecodeStep``, step for step."""

from __future__ import annotations

import torch

from sgld.models.placement import Placement
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.minimax_h3_denoising import H3Layout

# The video VAE's pixels are ImageNet-normalised, in and out (diffusers' ``pixel_mean`` / ``pixel_std``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEREO = 2  # audio channels: two channel-major blocks of rows


def _column(values, dims: int, device: torch.device) -> torch.Tensor:
    """A per-channel constant shaped to broadcast over (batch, channels, *dims)."""
    return torch.tensor(values, device=device).view(1, -1, *([1] * dims))


def unpatchify_video(rows: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int],
                     channels: int) -> torch.Tensor:
    """Generated video rows (frame-major, then row-major patches) -> (1, channels, frames, height, width)."""
    (frames, height, width), (pt, ph, pw) = grid, patch
    rows = rows.reshape(-1, frames // pt, height // ph, width // pw, channels, pt, ph, pw)
    return rows.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(-1, channels, frames, height, width).contiguous()


class MiniMaxH3VideoDecodingStage(Stage):
    """Video rows -> uint8 frames (rank 0 only in parallel runs). The VAE keeps its tiling: the released frames
    are the blended-tile ones (the pipeline leaves ``use_tiling`` as the VAE sets it)."""

    name = "decode"

    def __init__(self, vae: torch.nn.Module, patch: tuple[int, int, int], placement: Placement,
                 parallel: ParallelState):
        self.vae = vae
        self.patch = tuple(patch)
        self.placement = placement
        self.parallel = parallel

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not self.parallel.is_main:
            return req
        layout: H3Layout = req.model_kwargs["layout"]
        vae = self.vae
        with self.placement.active("vae", vae):
            device = next(vae.parameters()).device
            rows = req.latents[layout.condition_video_rows:].to(device)
            latents = unpatchify_video(rows, layout.grid, self.patch, vae.config.latent_channels)
            latents = latents * _column(vae.config.latents_std, 3, device) + _column(vae.config.latents_mean, 3, device)
            video = vae.decode(latents, return_dict=False)[0]
        video = (video.float() * _column(IMAGENET_STD, 3, video.device) + _column(IMAGENET_MEAN, 3, video.device))
        video = video.clamp(0, 1)[0].permute(1, 2, 3, 0)  # (frames, height, width, 3)
        req.frames = (video * 255).round().to(torch.uint8).cpu().numpy()
        return req


class MiniMaxH3AudioDecodingStage(Stage):
    """Audio rows -> float32 stereo waveform (2, samples) on the CPU at the audio VAE's rate."""

    name = "decode_audio"

    def __init__(self, audio_vae: torch.nn.Module, placement: Placement, parallel: ParallelState):
        self.audio_vae = audio_vae
        self.placement = placement
        self.parallel = parallel

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not self.parallel.is_main:
            return req
        layout: H3Layout = req.model_kwargs["layout"]
        audio_vae = self.audio_vae
        with self.placement.active("audio_vae", audio_vae):
            device = next(audio_vae.parameters()).device
            rows = req.audio_latents[layout.condition_audio_rows:].to(device)
            latents = rows.reshape(STEREO, layout.audio_length, rows.shape[-1]).permute(0, 2, 1)
            config = audio_vae.config
            latents = latents * _column(config.latents_std, 1, device) + _column(config.latents_mean, 1, device)
            audio = audio_vae.decode(latents, return_dict=False)[0]  # (2, 1, samples): stereo as the batch
        req.waveform = audio.float()[:, 0].cpu().numpy()
        req.sample_rate = int(config.sampling_rate)
        return req
