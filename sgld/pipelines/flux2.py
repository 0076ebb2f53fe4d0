"""FLUX.2 text-to-image, optionally with reference images: [klein] (Qwen3; base: CFG, distilled: no guidance)
and [dev] (Mistral; embedded guidance)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES, flux_vae_scale
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.denoising import CFG_NONE, CFG_SEQUENTIAL, DenoisingStage
from sgld.stages.flux2 import (
    Flux2LatentStage, Flux2ReferenceImageStage, Flux2TextEncodingStage, Flux2VaeDecodingStage,
    MistralTextEncodingStage, check_reference_image, empirical_shift,
)
from sgld.stages.image_latents import FlowMatchTimestepStage, PackedImageDit
from sgld.stages.validation import InputValidationStage


class Flux2KleinT2IPipeline(Pipeline):
    """Qwen3 (three stacked layers) -> FLUX.2 DiT (CFG as two forwards, as the reference runs it) -> FLUX.2 VAE."""

    spec = FAMILIES["flux2_klein"]
    text_stage = Flux2TextEncodingStage
    cfg_mode = CFG_SEQUENTIAL  # CFG as two forwards, as the reference runs it

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        # The step-distilled klein takes no guidance (its model_index.json says is_distilled).
        self.distilled = bool(components.get("is_distilled"))
        step_hooks = self.configure_one_dit("text_encoder", "vae")
        vae_scale = flux_vae_scale(vae.config)
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            self.text_stage(components["tokenizer"], components["text_encoder"], self.placement, dtype, self.spec.guided),
            Flux2LatentStage(transformer.config.in_channels // 4, vae_scale, device, dtype,
                             guidance_embeds=transformer.config.guidance_embeds),
            FlowMatchTimestepStage(components["scheduler"], device, shift=empirical_shift),
            Flux2ReferenceImageStage(vae, self.placement, vae_scale),
            DenoisingStage([("transformer", transformer)], self.placement, parallel, guidance=self.spec.guidance,
                           adapter=PackedImageDit(dtype), cfg_mode=self.cfg_mode, step_hooks={"transformer": step_hooks}),
            Flux2VaeDecodingStage(vae, self.placement, vae_scale),
        ]

    def check_request(self, req: Request) -> None:
        super().check_request(req)
        if req.image_path and self.components["vae"].encoder is None:
            raise UserError("image_path: this run skips the VAE encoder (vae.load_encoder=false), so it cannot take "
                            "reference images", param="image_path")
        for path in req.image_paths:
            check_reference_image(path)
        if self.distilled and self.spec.guided(req):
            raise UserError(f"guidance_scale={req.guidance_scale:g}: this FLUX.2 [klein] model is step-distilled and "
                            "takes no guidance; use 1.0", param="guidance_scale")


class Flux2DevT2IPipeline(Flux2KleinT2IPipeline):
    """Mistral Small 3.x (three stacked layers) -> FLUX.2 DiT (``guidance_scale`` is the distilled guidance input)."""

    spec = FAMILIES["flux2_dev"]
    text_stage = MistralTextEncodingStage
    cfg_mode = CFG_NONE  # one branch: the guidance scale is a DiT input
