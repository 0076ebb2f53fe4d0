"""HunyuanVideo and FastHunyuan text-to-video (embedded guidance, one DiT forward per step)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.families import FAMILIES
from sgld.levers.sliding_tile import StaState, check_coverage
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.decoding import HunyuanVaeDecodingStage
from sgld.stages.denoising import DenoisingStage
from sgld.stages.hunyuan_text import HunyuanTextEncodingStage
from sgld.stages.latents import VideoLatentPreparationStage
from sgld.stages.timesteps import TimestepPreparationStage
from sgld.stages.validation import InputValidationStage


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

    spec = FAMILIES["hunyuan"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        step_hooks = self.configure_one_dit("text_encoder", "text_encoder_2", "vae")
        self.sliding_tiles = next((hook for hook in step_hooks if isinstance(hook, StaState)), None)
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            HunyuanTextEncodingStage(components["tokenizer"], components["text_encoder"], components["tokenizer_2"],
                                     components["text_encoder_2"], self.placement, dtype),
            GuidanceInputStage(device, dtype),
            TimestepPreparationStage(components["scheduler"], device, linear_sigmas=True),
            VideoLatentPreparationStage(transformer.config.in_channels, vae.config.spatial_compression_ratio,
                                        self.constraints.temporal_factor, device),
            DenoisingStage([("transformer", transformer)], self.placement, parallel, guidance=self.spec.guidance,
                           step_hooks={"transformer": step_hooks}),
            HunyuanVaeDecodingStage(vae, self.placement, parallel, split_tiles=run.vae.sp),
        ]

    def check_request(self, req: Request) -> None:
        super().check_request(req)
        tiles = self.sliding_tiles
        if tiles is not None:  # the mask strategy must give a window for every step this request runs
            check_coverage(tiles.strategy, req.num_inference_steps, tiles.layers, tiles.heads,
                           self.run.model.mask_strategy_file_path)
