"""HunyuanVideo-1.5 text-to-video and image-to-video (CFG over Qwen2.5-VL + ByT5 text, SigLIP first frame)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.stages.decoding import VideoVaeDecodingStage
from sgld.stages.denoising import CFG_SEQUENTIAL, DenoisingStage
from sgld.levers.hunyuan15_attention import enable_mask_free_attention
from sgld.stages.hunyuan15_condition import Hunyuan15ConditionStage, Hunyuan15Dit
from sgld.stages.hunyuan15_text import Hunyuan15TextEncodingStage
from sgld.stages.latents import VideoLatentPreparationStage
from sgld.stages.timesteps import TimestepPreparationStage
from sgld.stages.validation import InputValidationStage


class Hunyuan15T2VPipeline(Pipeline):
    """Qwen2.5-VL + ByT5 -> HunyuanVideo-1.5 DiT (CFG as two forwards) -> its VAE.

    Each branch gives the DiT its prompt's real tokens only, so attention runs without a mask
    (``enable_mask_free_attention``); the two branches' prompts differ in length, so they run as
    two forwards rather than one padded, masked batch.

    The image-to-video subclass adds SigLIP and the VAE-encoded first frame; sizes left unset
    follow the input image's aspect (the model's bucket nearest it).
    """

    spec = FAMILIES["hunyuan15_t2v"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer = components["vae"], components["transformer"]
        if transformer.config.get("use_meanflow"):
            raise UserError("this HunyuanVideo-1.5 folder is a MeanFlow step-distilled DiT (use_meanflow), "
                            "which sgld does not run yet; use a 480p/720p t2v or i2v folder", param="model_path")
        enable_mask_free_attention(transformer)  # before the levers: the attention backend is set on these processors
        step_hooks = self.configure_one_dit("text_encoder", "text_encoder_2", "vae", "image_encoder")
        dtype = transformer.dtype
        image_encoder = components.get("image_encoder") if self.spec.needs_image else None
        self.stages = [
            InputValidationStage(self.check_request),  # sizes left unset follow the input image (FamilySpec)
            Hunyuan15TextEncodingStage(components["tokenizer"], components["text_encoder"], components["tokenizer_2"],
                                       components["text_encoder_2"], self.placement, dtype),
            TimestepPreparationStage(components["scheduler"], device, linear_sigmas=True),
            VideoLatentPreparationStage(vae.config.latent_channels, vae.config.spatial_compression_ratio,
                                        self.constraints.temporal_factor, device),
            Hunyuan15ConditionStage(vae, self.placement, dtype, transformer.config.image_embed_dim,
                                    image_encoder, components.get("feature_extractor")),
            DenoisingStage([("transformer", transformer)], self.placement, parallel, guidance=self.spec.guidance,
                           adapter=Hunyuan15Dit(dtype), cfg_mode=CFG_SEQUENTIAL, step_hooks={"transformer": step_hooks}),
            VideoVaeDecodingStage(vae, self.placement, parallel),
        ]


class Hunyuan15I2VPipeline(Hunyuan15T2VPipeline):
    """HunyuanVideo-1.5 image-to-video: the input image is the first frame."""

    spec = FAMILIES["hunyuan15_i2v"]
