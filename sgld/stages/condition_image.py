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


# Qwen-Image-Edit-Plus hands each input image to the VL encoder at about 384² (the VAE still gets ~1 MP).
PLUS_VL_AREA = 384 * 384


class ConditionImageStage(Stage):
    """Loads every input image (``req.image_paths``) and sizes it as the reference does.

    Each image is resized to about one megapixel for the VAE (``req.condition_pixels``: (1, 3, 1, H, W)
    in [-1, 1], and ``req.condition_size``) and to about ``vl_area`` pixels for the VL processor
    (``req.condition_image``, PIL): Qwen-Image-Edit uses the ~1 MP image for both, Edit-Plus ~384².
    All three are lists, one entry per image. When the request gives no height/width, the output takes
    the last image's ~1 MP size (rounded down to ``multiple``).
    """

    name = "condition_image"

    def __init__(self, vae_scale_factor: int, vl_area: int = CONDITION_AREA):
        from diffusers.image_processor import VaeImageProcessor

        self.multiple = vae_scale_factor * 2
        self.vl_area = vl_area
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.multiple)

    def forward(self, req: Request) -> Request:
        vl_images, pixels, sizes = [], [], []
        for path in req.image_paths:
            image = open_input_image(path)
            vl_width, vl_height = condition_size(*image.size, area=self.vl_area)
            width, height = condition_size(*image.size)
            vl_images.append(self.image_processor.resize(image, vl_height, vl_width))
            pixels.append(self.image_processor.preprocess(image, height, width).unsqueeze(2))
            sizes.append((height, width))
        if req.height is None or req.width is None:
            height, width = sizes[-1]
            req.height = height // self.multiple * self.multiple
            req.width = width // self.multiple * self.multiple
        req.condition_image, req.condition_pixels, req.condition_size = vl_images, pixels, sizes
        return req


class ConditionLatentStage(Stage):
    """VAE-encodes the condition pixels (distribution mode), normalises and packs them into tokens.

    The tokens go to ``req.condition_tokens`` (appended after the noise tokens in every
    DiT call) and their grids to ``img_shapes``, after the noise grid; several input images
    (Qwen-Image-Edit-Plus) are encoded one by one, their tokens concatenated in order.
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

        tokens = []
        with self.placement.active("vae", self.vae) as vae:
            device, dtype = next(vae.parameters()).device, vae.dtype
            for pixels in req.condition_pixels:
                latents = self.norm.normalize(vae.encode(pixels.to(device=device, dtype=dtype)).latent_dist.mode())
                _, channels, _, h, w = latents.shape
                tokens.append(FluxPipeline._pack_latents(latents[:, :, 0], 1, channels, h, w))
        req.condition_tokens = torch.cat(tokens, dim=1).to(device=req.latents.device, dtype=req.latents.dtype)
        f = self.vae_scale_factor * 2
        grids = [(1, height // f, width // f) for height, width in req.condition_size]
        req.model_kwargs["img_shapes"] = [req.model_kwargs["img_shapes"][0] + grids]
        return req
