"""Packed (2x2) image latents, flow-matching timesteps with resolution-dependent shift, and the DiT adapter
of the packed-latent families (FLUX.1, FLUX.2, Qwen-Image)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift
from diffusers.utils.torch_utils import randn_tensor

from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.dit_adapter import DitAdapter


class PackedLatentPreparationStage(Stage):
    """Noise of shape (1, C, H/s, W/s), packed into (1, H/2s * W/2s, 4C) tokens as FLUX and Qwen-Image do.

    Drawn by a CPU generator seeded with the request's seed (same noise on any device).
    ``position_ids`` adds FLUX's ``img_ids``; ``img_shapes`` adds Qwen-Image's;
    ``guidance_embeds`` adds FLUX-dev's distilled guidance input.
    """

    name = "prepare_latents"

    def __init__(self, channels: int, vae_scale_factor: int, device: torch.device, dtype: torch.dtype, *,
                 position_ids: bool = False, img_shapes: bool = False, guidance_embeds: bool = False, packed: bool = True):
        self.channels = channels
        self.vae_scale_factor = vae_scale_factor
        self.device = device
        self.dtype = dtype
        self.position_ids = position_ids
        self.img_shapes = img_shapes
        self.guidance_embeds = guidance_embeds
        self.packed = packed  # False: the noise stays (1, C, H/s, W/s), as Z-Image's DiT takes it

    def latent_size(self, req: Request) -> tuple[int, int]:
        """Latent height and width (even, for 2x2 packing)."""
        f = self.vae_scale_factor * 2
        return 2 * (req.height // f), 2 * (req.width // f)

    def forward(self, req: Request) -> Request:
        h, w = self.latent_size(req)
        generator = torch.Generator("cpu").manual_seed(req.seed)
        noise = randn_tensor((1, self.channels, h, w), generator=generator, device=self.device, dtype=self.dtype)
        req.latents = FluxPipeline._pack_latents(noise, 1, self.channels, h, w) if self.packed else noise
        if self.position_ids:
            req.model_kwargs["img_ids"] = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        if self.img_shapes:
            req.model_kwargs["img_shapes"] = [[(1, h // 2, w // 2)]]
        if self.guidance_embeds:
            req.model_kwargs["guidance"] = torch.full([1], req.guidance_scale, device=self.device, dtype=torch.float32)
        return req


def resolution_shift(config, tokens: int, steps: int) -> float:
    """FLUX.1 / Qwen-Image's ``mu``: linear in the image token count between the scheduler's bounds."""
    return calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                           config.get("base_shift", 0.5), config.get("max_shift", 1.15))


class FlowMatchTimestepStage(Stage):
    """Flow-matching Euler timesteps, sigmas 1 -> 1/n shifted by ``mu`` from the image token count.

    ``shift(config, tokens, steps) -> mu``: the family's shift (FLUX.2 fits it on the step count too).
    """

    name = "timesteps"

    def __init__(self, scheduler, device: torch.device, packed: bool = True,
                 shift: Callable[[Any, int, int], float] = resolution_shift):
        self.scheduler_cls = type(scheduler)
        self.config = scheduler.config
        self.device = device
        self.packed = packed  # False: (1, C, h, w) latents of 2x2 patches
        self.shift = shift

    def forward(self, req: Request) -> Request:
        n = req.num_inference_steps
        config = self.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / n, n)
        latents = req.latents
        tokens = latents.shape[1] if self.packed else (latents.shape[2] // 2) * (latents.shape[3] // 2)
        mu = self.shift(config, tokens, n)
        scheduler = self.scheduler_cls.from_config(config)
        if sigmas is None:
            scheduler.set_timesteps(n, device=self.device, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)
        scheduler.set_begin_index(0)
        req.scheduler, req.timesteps = scheduler, scheduler.timesteps
        return req


class PackedImageDit(DitAdapter):
    """FLUX.1, FLUX.2 and Qwen-Image: the timestep as t / 1000 in the latents' dtype, and reference tokens.

    ``req.condition_tokens`` (an edit's or FLUX.2's input images, packed) follow the noise tokens in
    every call; the DiT predicts them too, and only the noise tokens' prediction is stepped.
    """

    def model_input(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        x = latents.to(self.dtype)
        if req.condition_tokens is None:
            return x
        return torch.cat([x, req.condition_tokens.to(self.dtype)], dim=1)

    def timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> torch.Tensor:
        return t.expand(batch).to(latents.dtype) / 1000

    def prediction(self, out: torch.Tensor, latents: torch.Tensor, req: Request) -> torch.Tensor:
        return out if req.condition_tokens is None else out[:, : latents.shape[1]]
