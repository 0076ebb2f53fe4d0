"""Qwen-Image text-to-image and Qwen-Image-Edit (text + input image to image)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.families import FAMILIES, qwen_vae_scale
from sgld.levers.real_rope import use_real_rope
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.stages.condition_image import CONDITION_AREA, PLUS_VL_AREA, ConditionImageStage, ConditionLatentStage
from sgld.stages.decoding import QwenVaeDecodingStage
from sgld.stages.denoising import CFG_BATCHED, CFG_MODES, DenoisingStage
from sgld.stages.image_latents import FlowMatchTimestepStage, PackedImageDit, PackedLatentPreparationStage
from sgld.stages.qwen_text import (QWEN_IMAGE_EDIT_PLUS_TEMPLATE, QWEN_IMAGE_EDIT_TEMPLATE, QWEN_IMAGE_TEMPLATE,
                                   QwenTextEncodingStage)
from sgld.stages.validation import InputValidationStage


class QwenImageT2IPipeline(Pipeline):
    """Qwen2.5-VL -> Qwen-Image MMDiT with true CFG (``guidance_scale`` is ``true_cfg_scale``) -> VAE."""

    spec = FAMILIES["qwen_image"]
    # The branches' prompts differ in length (true CFG): by default two forwards, as the reference runs them.
    # CFG_BATCHED pads the shorter prompt (masked) and runs both in one forward (set_cfg_mode).
    cfg_mode = CFG_MODES[spec.guidance]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        use_real_rope(transformer)  # before the levers: the attention backend is set on these processors
        step_hooks = self.configure_one_dit("text_encoder", "vae")
        self.vae_scale = qwen_vae_scale(vae.config)
        dtype = transformer.dtype
        self.stages = [
            InputValidationStage(self.check_request),
            *self.condition_stages(),
            self.text_stage(dtype),
            PackedLatentPreparationStage(transformer.config.in_channels // 4, self.vae_scale, device, dtype,
                                         img_shapes=True),
            *self.condition_latent_stages(),
            FlowMatchTimestepStage(components["scheduler"], device),
            # true_cfg: the guided prediction rescaled to the conditional one's norm, as the reference does.
            DenoisingStage([("transformer", transformer)], self.placement, parallel, guidance=self.spec.guidance,
                           adapter=PackedImageDit(dtype), cfg_mode=self.cfg_mode, step_hooks={"transformer": step_hooks}),
            QwenVaeDecodingStage(vae, self.placement, self.vae_scale),
        ]

    def set_cfg_mode(self, mode: str) -> None:
        """Run the true-CFG branches as two forwards (CFG_SEQUENTIAL) or padded into one (CFG_BATCHED)."""
        for stage in self.stages:
            if isinstance(stage, QwenTextEncodingStage):
                stage.pad_branches = mode == CFG_BATCHED
            elif isinstance(stage, DenoisingStage):
                stage.cfg_mode = mode

    def text_stage(self, dtype: torch.dtype) -> QwenTextEncodingStage:
        """Prompt encoding with the text-to-image template."""
        return QwenTextEncodingStage(self.components["tokenizer"], self.components["text_encoder"], self.placement,
                                     dtype, QWEN_IMAGE_TEMPLATE, pad_branches=self.cfg_mode == CFG_BATCHED)

    def condition_stages(self) -> list:
        """Stages that prepare the input image before prompt encoding (none for text-to-image)."""
        return []

    def condition_latent_stages(self) -> list:
        """Stages that add the input image's latent tokens (none for text-to-image)."""
        return []


class QwenImageEditTI2IPipeline(QwenImageT2IPipeline):
    """Qwen-Image-Edit: the input image conditions the prompt encoding (VL) and the DiT (latent tokens)."""

    spec = FAMILIES["qwen_image_edit"]
    # The prompt template, and the size the VL encoder sees each input image at.
    template = QWEN_IMAGE_EDIT_TEMPLATE
    vl_area = CONDITION_AREA

    def text_stage(self, dtype: torch.dtype) -> QwenTextEncodingStage:
        return QwenTextEncodingStage(self.components["processor"], self.components["text_encoder"], self.placement,
                                     dtype, self.template, with_image=True, pad_branches=self.cfg_mode == CFG_BATCHED)

    def condition_stages(self) -> list:
        return [ConditionImageStage(self.vae_scale, vl_area=self.vl_area)]

    def condition_latent_stages(self) -> list:
        return [ConditionLatentStage(self.components["vae"], self.placement, self.vae_scale)]


class QwenImageEditPlusTI2IPipeline(QwenImageEditTI2IPipeline):
    """Qwen-Image-Edit-Plus (2509, 2511): one to three input images, numbered in the prompt and appended as tokens."""

    spec = FAMILIES["qwen_image_edit_plus"]
    template = QWEN_IMAGE_EDIT_PLUS_TEMPLATE
    vl_area = PLUS_VL_AREA
