"""FLUX.1 text-to-image (dev: guidance-distilled; schnell: no guidance input)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.families import FAMILIES, flux_vae_scale
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.stages.decoding import FluxVaeDecodingStage
from sgld.stages.denoising import DenoisingStage
from sgld.stages.flux_text import FluxTextEncodingStage
from sgld.stages.image_latents import FlowMatchTimestepStage, PackedImageDit, PackedLatentPreparationStage
from sgld.stages.validation import InputValidationStage


class FluxT2IPipeline(Pipeline):
    """CLIP + T5 -> FLUX DiT (``guidance_scale`` is the distilled guidance input) -> VAE."""

    spec = FAMILIES["flux"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        step_hooks = self.configure_one_dit("text_encoder", "text_encoder_2", "vae")
        vae_scale = flux_vae_scale(vae.config)
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            FluxTextEncodingStage(components["tokenizer"], components["text_encoder"], components["tokenizer_2"],
                                  components["text_encoder_2"], self.placement, dtype),
            PackedLatentPreparationStage(transformer.config.in_channels // 4, vae_scale, device, dtype,
                                         position_ids=True, guidance_embeds=transformer.config.guidance_embeds),
            FlowMatchTimestepStage(components["scheduler"], device),
            DenoisingStage([("transformer", transformer)], self.placement, parallel, guidance=self.spec.guidance,
                           adapter=PackedImageDit(dtype), step_hooks={"transformer": step_hooks}),
            FluxVaeDecodingStage(vae, self.placement, vae_scale),
        ]
