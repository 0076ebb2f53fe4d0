"""Wan video models: text-to-video (Wan2.1, Wan2.2 A14B), Wan2.2 TI2V-5B, image-to-video (Wan2.1/2.2 I2V)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.decoding import WanVaeDecodingStage
from sgld.stages.denoising import DenoisingStage
from sgld.stages.dit_adapter import DitAdapter
from sgld.stages.first_frame import (ChannelConditionDit, FirstFrameConditionStage, FirstFrameDit,
                                     ImageEmbeddingStage)
from sgld.stages.latents import VideoLatentPreparationStage
from sgld.stages.text_encoding import T5TextEncodingStage
from sgld.stages.timesteps import TimestepPreparationStage
from sgld.stages.validation import InputValidationStage


class WanT2VPipeline(Pipeline):
    """UMT5 text encoder -> Wan DiT (one or two experts) -> Wan VAE.

    Subclasses add the input image (whether one is taken follows the family's ``image_mode``);
    ``first_frame_only`` picks TI2V's one-latent-frame conditioning over I2V's
    channel-concatenated whole-video condition.
    """

    spec = FAMILIES["wan_t2v"]
    first_frame_only = False

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, scheduler = components["vae"], components["scheduler"]
        experts = [(n, components[n]) for n in ("transformer", "transformer_2") if components.get(n) is not None]
        if not experts:
            raise UserError("model folder has no transformer", param="model_path")

        self.configure_vae(vae)
        self.encodes_images = self.spec.takes_image and vae.encoder is not None
        step_hooks = {name: self.configure_dit(name, module) for name, module in experts}
        self.place("text_encoder", "vae", "image_encoder")
        image_encoder = components.get("image_encoder")

        self.constraints = self.spec.sizes(vae.config, experts[0][1].config)
        temporal = self.constraints.temporal_factor
        boundary_ratio = components.get("boundary_ratio")
        boundary = boundary_ratio * scheduler.config.num_train_timesteps if boundary_ratio is not None else None
        dit_dtype = experts[0][1].dtype

        self.stages = [
            InputValidationStage(self.check_request),
            T5TextEncodingStage(components["tokenizer"], components["text_encoder"], self.placement, dit_dtype),
        ]
        if image_encoder is not None:
            self.stages.append(ImageEmbeddingStage(components["image_processor"], image_encoder, self.placement, dit_dtype))
        self.stages += [
            TimestepPreparationStage(scheduler, device),
            VideoLatentPreparationStage(vae.config.z_dim, vae.config.scale_factor_spatial, temporal, device),
        ]
        if self.encodes_images:
            self.stages.append(FirstFrameConditionStage(vae, self.placement, self.first_frame_only))
        self.stages += [
            DenoisingStage(experts, self.placement, parallel, boundary, guidance=self.spec.guidance,
                           adapter=self.dit_adapter(components, experts[0][1]), step_hooks=step_hooks),
            WanVaeDecodingStage(vae, self.placement, parallel, split_tiles=run.vae.sp),
        ]

    def dit_adapter(self, components: dict[str, Any], transformer) -> DitAdapter:
        """How the denoise loop feeds the DiT: Wan2.2 TI2V (expand_timesteps) gives every latent token its own
        timestep and keeps a given first frame clean; I2V concatenates its condition channels; T2V is the plain call."""
        if components.get("expand_timesteps"):
            patch = transformer.config.patch_size
            return FirstFrameDit(transformer.dtype, (patch[1], patch[2]))
        return DitAdapter(transformer.dtype)

    def check_request(self, req: Request) -> None:
        super().check_request(req)
        if req.image_path and not self.encodes_images:
            raise UserError("image_path: this run skips the VAE encoder (vae.load_encoder=false), "
                            "so it cannot take an input image", param="image_path")


class WanTI2VPipeline(WanT2VPipeline):
    """Wan2.2 TI2V-5B: text-to-video, or text + first frame (``--image-path``) to video."""

    spec = FAMILIES["wan_ti2v"]
    first_frame_only = True


class WanI2VPipeline(WanT2VPipeline):
    """Wan2.1 I2V (with CLIP image tokens) and Wan2.2 I2V A14B: the input image is the first frame."""

    spec = FAMILIES["wan_i2v"]

    def dit_adapter(self, components: dict[str, Any], transformer) -> DitAdapter:
        return ChannelConditionDit(transformer.dtype)
