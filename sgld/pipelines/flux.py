"""FLUX.1 text-to-image (dev: guidance-distilled; schnell: no guidance input)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.models.loading import configure_transformer, enable_vae_tiling
from sgld.pipelines.base import Pipeline
from sgld.pipelines.constraints import flux_vae_scale
from sgld.request import Request
from sgld.stages.decoding import FluxVaeDecodingStage
from sgld.stages.denoising import CFG_NONE, DenoisingStage
from sgld.stages.flux_text import FluxTextEncodingStage
from sgld.stages.image_latents import FlowMatchTimestepStage, PackedLatentPreparationStage
from sgld.stages.validation import InputValidationStage, check_image_request


class FluxT2IPipeline(Pipeline):
    """CLIP + T5 -> FLUX DiT (``guidance_scale`` is the distilled guidance input) -> VAE."""

    family = "flux"

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device):
        super().__init__(components, run, device)
        vae, transformer = components["vae"], components["transformer"]
        if run.vae.tiling:
            enable_vae_tiling(vae, run.vae.tile_sample_min_height, run.vae.tile_sample_min_width)
        configure_transformer(transformer, run, device)
        for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
            self.placement.place(name, components[name])
        vae_scale = flux_vae_scale(vae.config)
        self.spatial_multiple = 2 * vae_scale
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            FluxTextEncodingStage(components["tokenizer"], components["text_encoder"], components["tokenizer_2"],
                                  components["text_encoder_2"], self.placement, dtype),
            PackedLatentPreparationStage(transformer.config.in_channels // 4, vae_scale, device, dtype,
                                         position_ids=True, guidance_embeds=transformer.config.guidance_embeds),
            FlowMatchTimestepStage(components["scheduler"], device),
            DenoisingStage([("transformer", transformer)], self.placement, cfg_mode=CFG_NONE, timestep_divisor=1000),
            FluxVaeDecodingStage(vae, self.placement, vae_scale),
        ]

    def check_request(self, req: Request) -> None:
        check_image_request(req, self.spatial_multiple)
