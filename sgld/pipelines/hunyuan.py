"""HunyuanVideo and FastHunyuan text-to-video (embedded guidance, one DiT forward per step)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.models.loading import configure_transformer
from sgld.pipelines.base import Pipeline
from sgld.pipelines.constraints import hunyuan_size_constraints
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.decoding import HunyuanVaeDecodingStage
from sgld.stages.denoising import CFG_NONE, DenoisingStage
from sgld.stages.hunyuan_text import HunyuanTextEncodingStage
from sgld.stages.latents import VideoLatentPreparationStage
from sgld.stages.timesteps import TimestepPreparationStage
from sgld.stages.validation import InputValidationStage, check_video_request


class GuidanceInputStage(Stage):
    """The distilled guidance input: ``guidance_scale`` x 1000 in the DiT's dtype, as the reference passes it."""

    name = "guidance"

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype

    def forward(self, req: Request) -> Request:
        req.model_kwargs["guidance"] = torch.tensor([req.guidance_scale], dtype=self.dtype, device=self.device) * 1000.0
        return req


class HunyuanT2VPipeline(Pipeline):
    """Llama + CLIP -> HunyuanVideo DiT (``guidance_scale`` is the embedded guidance) -> causal 3D VAE."""

    family = "hunyuan"
    supports_vae_sp = True

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device):
        super().__init__(components, run, device)
        vae, transformer = components["vae"], components["transformer"]
        self.configure_video_vae(vae)
        configure_transformer(transformer, run, device, attention_mask=self.masks_attention)
        for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
            self.placement.place(name, components[name])
        self.spatial_multiple, self.temporal_factor = hunyuan_size_constraints(vae.config, transformer.config)
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            HunyuanTextEncodingStage(components["tokenizer"], components["text_encoder"], components["tokenizer_2"],
                                     components["text_encoder_2"], self.placement, dtype),
            GuidanceInputStage(device, dtype),
            TimestepPreparationStage(components["scheduler"], device, linear_sigmas=True),
            VideoLatentPreparationStage(transformer.config.in_channels, vae.config.spatial_compression_ratio,
                                        self.temporal_factor, device),
            DenoisingStage([("transformer", transformer)], self.placement, cfg_mode=CFG_NONE),
            HunyuanVaeDecodingStage(vae, self.placement, split_tiles=run.vae.sp),
        ]

    def check_request(self, req: Request) -> None:
        check_video_request(req, self.spatial_multiple, self.temporal_factor)
        sliding_tiles = getattr(self.components["transformer"], "sgld_sta_state", None)
        if sliding_tiles is not None:
            from sgld.models.sliding_tile import check_coverage

            check_coverage(sliding_tiles.strategy, req.num_inference_steps, sliding_tiles.layers, sliding_tiles.heads,
                           self.run.model.mask_strategy_file_path)
