"""Z-Image text-to-image (Z-Image-Turbo: few steps, guidance off by default)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.families import FAMILIES, flux_vae_scale
from sgld.levers.real_rope import use_real_rope
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.stages.decoding import ImageVaeDecodingStage
from sgld.stages.denoising import DenoisingStage
from sgld.stages.image_latents import FlowMatchTimestepStage, PackedLatentPreparationStage
from sgld.stages.validation import InputValidationStage
from sgld.stages.z_image_text import ZImageTextEncodingStage


class ZImageDit(torch.nn.Module):
    """Z-Image's DiT behind the denoise loop's calling convention.

    ``ZImageTransformer2DModel`` takes a list of (C, 1, H, W) latents, ``1 - t / 1000`` and a list of
    caption embeddings of their own lengths, and predicts the negated velocity as a list; this
    turns the loop's batched tensors (text padded, with a mask) into those lists and back. The
    wrapped module stays the one the speed levers and LoRA adapters act on.
    """

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_mask: torch.Tensor | None = None, return_dict: bool = False):
        latents = list(hidden_states.to(self.dtype).unsqueeze(2).unbind(0))
        if encoder_hidden_states_mask is None:
            captions = list(encoder_hidden_states.unbind(0))
        else:
            captions = [h[m] for h, m in zip(encoder_hidden_states, encoder_hidden_states_mask.bool())]
        out = self.transformer(latents, (1000 - timestep) / 1000, captions, return_dict=False)[0]
        return (-torch.stack([o.float() for o in out]).squeeze(2),)


class ZImageT2IPipeline(Pipeline):
    """Qwen3 -> Z-Image single-stream DiT (CFG as cond + s (cond - uncond), on when s > 0) -> FLUX-layout VAE."""

    spec = FAMILIES["z_image"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        use_real_rope(transformer)  # before the levers: the attention backend is set on these processors
        step_hooks = self.configure_one_dit("text_encoder", "vae")
        vae_scale = flux_vae_scale(vae.config)
        self.stages = [
            InputValidationStage(self.check_request),
            ZImageTextEncodingStage(components["tokenizer"], components["text_encoder"], self.placement,
                                    transformer.dtype, self.spec.guided),
            # The reference draws the noise in fp32 and keeps the latents fp32 through the scheduler.
            PackedLatentPreparationStage(transformer.config.in_channels, vae_scale, device, torch.float32, packed=False),
            FlowMatchTimestepStage(components["scheduler"], device, packed=False),
            # cfg_extra: cond + s (cond - uncond), the loop's CFG with scale 1 + s.
            DenoisingStage([("transformer", ZImageDit(transformer))], self.placement, parallel,
                           guidance=self.spec.guidance, step_hooks={"transformer": step_hooks}),
            ImageVaeDecodingStage(vae, self.placement, vae_scale),
        ]
