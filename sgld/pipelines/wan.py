"""Wan text-to-video (Wan2.1 and the two-expert Wan2.2 A14B)."""

from __future__ import annotations

from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.loading import configure_transformer, enable_vae_tiling
from sgld.pipelines.base import Pipeline
from sgld.pipelines.constraints import wan_size_constraints
from sgld.request import Request
from sgld.stages.decoding import WanVaeDecodingStage
from sgld.stages.denoising import DenoisingStage
from sgld.stages.latents import VideoLatentPreparationStage
from sgld.stages.text_encoding import T5TextEncodingStage
from sgld.stages.timesteps import TimestepPreparationStage
from sgld.stages.validation import InputValidationStage, check_video_request


class WanT2VPipeline(Pipeline):
    """UMT5 text encoder -> Wan DiT (one or two experts) -> Wan VAE."""

    family = "wan"
    supports_vae_sp = True

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device):
        super().__init__(components, run, device)
        vae, scheduler = components["vae"], components["scheduler"]
        experts = [(n, components[n]) for n in ("transformer", "transformer_2") if components.get(n) is not None]
        if not experts:
            raise UserError("model folder has no transformer", param="model_path")

        if run.vae.tiling or run.vae.sp:  # vae_sp splits the tiles of a tiled decode
            enable_vae_tiling(vae, run.vae.tile_sample_min_height, run.vae.tile_sample_min_width)
        if not run.vae.load_encoder:
            vae.encoder = None  # text-to-video never encodes pixels
        for name, module in experts:
            configure_transformer(module, run)
            self.placement.place(name, module)
        self.placement.place("text_encoder", components["text_encoder"])
        self.placement.place("vae", vae)

        spatial = vae.config.scale_factor_spatial
        self.spatial_multiple, self.temporal_factor = wan_size_constraints(vae.config, experts[0][1].config)
        boundary_ratio = components.get("boundary_ratio")
        boundary = boundary_ratio * scheduler.config.num_train_timesteps if boundary_ratio is not None else None
        dit_dtype = experts[0][1].dtype

        self.stages = [
            InputValidationStage(self.check_request),
            T5TextEncodingStage(components["tokenizer"], components["text_encoder"], self.placement, dit_dtype),
            TimestepPreparationStage(scheduler, device),
            VideoLatentPreparationStage(experts[0][1].config.in_channels, spatial, self.temporal_factor, device),
            DenoisingStage(experts, self.placement, boundary, token_patch=self._token_patch(components, experts[0][1])),
            WanVaeDecodingStage(vae, self.placement, split_tiles=run.vae.sp),
        ]

    @staticmethod
    def _token_patch(components: dict[str, Any], transformer) -> tuple[int, int] | None:
        """Wan2.2 TI2V conditions every latent token on its own timestep (expand_timesteps)."""
        if not components.get("expand_timesteps"):
            return None
        patch = transformer.config.patch_size
        return (patch[1], patch[2])

    def check_request(self, req: Request) -> None:
        check_video_request(req, self.spatial_multiple, self.temporal_factor)
