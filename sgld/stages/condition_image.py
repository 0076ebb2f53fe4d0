"""The input image of edit models: loaded, sized to about one megapixel, and encoded to latent tokens."""

from __future__ import annotations

import math

import torch

from sgld.checks import open_input_image
from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.latent_norm import LatentNorm

# Qwen-Image-Edit conditions on the input image resized to about this many pixels,
# whatever the output size (the reference's calculate_dimensions(1024 * 1024, ratio)).
CONDITION_AREA = 1024 * 1024


def condition_size(width: int, height: int, area: int = CONDITION_AREA) -> tuple[int, int]:
    """(width, height) of about ``area`` pixels with the input's aspect ratio, in multiples of 32."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    return round(w / 32) * 32, round(h / 32) * 32


class ConditionImageStage(Stage):
    """Loads ``req.image_path`` and resizes it to the condition size.

    Sets ``req.condition_image`` (PIL, for the VL processor) and ``req.condition_pixels``
    ((1, 3, 1, H, W) in [-1, 1], for the VAE). When the request gives no height/width,
    the output takes the condition size (rounded down to ``multiple``), as the reference does.
    """

    name = "condition_image"

    def __init__(self, vae_scale_factor: int):
        from diffusers.image_processor import VaeImageProcessor

        self.multiple = vae_scale_factor * 2
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.multiple)

    def forward(self, req: Request) -> Request:
        image = open_input_image(req.image_path)
        width, height = condition_size(*image.size)
        if req.height is None or req.width is None:
            req.height = height // self.multiple * self.multiple
            req.width = width // self.multiple * self.multiple
        image = self.image_processor.resize(image, height, width)
        req.condition_image = image
        req.condition_pixels = self.image_processor.preprocess(image, height, width).unsqueeze(2)
        req.condition_size = (height, width)
        return req


class ConditionLatentStage(Stage):
    """VAE-encodes the condition pixels (distribution mode), normalises and packs them into tokens.

    The tokens go to ``req.condition_tokens`` (appended after the noise tokens in every
    DiT call) and their grid to ``img_shapes``, after the noise grid.
    """

    name = "condition_latents"

    def __init__(self, vae, placement: Placement, vae_scale_factor: int):
        self.vae = vae
        self.placement = placement
        self.vae_scale_factor = vae_scale_factor
        self.norm = LatentNorm.of(vae)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

        with self.placement.active("vae", self.vae) as vae:
            device, dtype = next(vae.parameters()).device, vae.dtype
            latents = vae.encode(req.condition_pixels.to(device=device, dtype=dtype)).latent_dist.mode()
        latents = self.norm.normalize(latents)
        _, channels, _, h, w = latents.shape
        tokens = FluxPipeline._pack_latents(latents[:, :, 0], 1, channels, h, w)
        req.condition_tokens = tokens.to(device=req.latents.device, dtype=req.latents.dtype)
        height, width = req.condition_size
        f = self.vae_scale_factor * 2
        req.model_kwargs["img_shapes"] = [req.model_kwargs["img_shapes"][0] + [(1, height // f, width // f)]]
        return req
