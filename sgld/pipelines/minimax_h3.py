"""MiniMax-H3: text (t2va) or text + a first and/or last keyframe (fl2va) to video with its stereo sound, in one
packed sequence denoised by one guidance-distilled forward a step and two schedulers.

The workflow follows the request's inputs; both run on the folder's ``transformer/`` partition, the only one
loaded (``transformer_ref/``, the omni-reference workflow's, is not).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES
from sgld.minimax_h3_rules import Geometry
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.minimax_h3_decoding import MiniMaxH3AudioDecodingStage, MiniMaxH3VideoDecodingStage
from sgld.stages.minimax_h3_denoising import MiniMaxH3DenoisingStage
from sgld.stages.minimax_h3_latents import MiniMaxH3LatentStage
from sgld.stages.minimax_h3_text import MiniMaxH3KeyframeStage, MiniMaxH3TextEncodingStage
from sgld.stages.validation import InputValidationStage

# modular_model_index.json's pipeline config (load_components passes its keys through) and the released defaults.
CANVAS_KEYS = {"canvas_short_edge": 768, "canvas_max_pixels": 768 * 1344, "reference_image_short_edge": 2048}


class MiniMaxH3Pipeline(Pipeline):
    """Qwen3-VL conditioner (decoder layer 50) -> the packed audio-video DiT -> video VAE and audio VAE."""

    spec = FAMILIES["minimax_h3"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, transformer, audio_vae = components["vae"], components["transformer"], components["audio_vae"]
        step_hooks = self.configure_one_dit("text_encoder", "audio_vae")
        index = {key: components.get(key, default) for key, default in CANVAS_KEYS.items()}
        geometry = Geometry.of_configs(index, vae.config, transformer.config)
        self.constraints = replace(self.constraints, rules=geometry)
        self.sample_rate = int(audio_vae.config.sampling_rate)
        patch = tuple(transformer.config.patch_size)
        self.stages = [
            InputValidationStage(self.check_request),
            MiniMaxH3KeyframeStage(geometry),
            MiniMaxH3TextEncodingStage(components["tokenizer"], components["processor"], components["text_encoder"],
                                       self.placement),
            MiniMaxH3LatentStage(vae, components["scheduler"], components["audio_scheduler"], geometry, patch,
                                 audio_vae.config.latent_channels, self.placement, device),
            MiniMaxH3DenoisingStage(transformer, self.placement, parallel, step_hooks=step_hooks),
            MiniMaxH3VideoDecodingStage(vae, patch, self.placement, parallel),
            MiniMaxH3AudioDecodingStage(audio_vae, self.placement, parallel),
        ]

    def configure_vae(self, vae: torch.nn.Module) -> None:
        """The encoder as the run asks; tiling stays as the VAE sets it (on): the released frames are the
        blended-tile ones, so turning it off or resizing its tiles would change the output."""
        vae_config = self.run.vae
        if vae_config.tile_sample_min_height is not None or vae_config.tile_sample_min_width is not None:
            raise UserError("vae.tile_sample_min_height/width: MiniMax-H3's VAE tiles at its own size (the released "
                            "frames are its blended tiles); leave them unset", param="vae.tile_sample_min_height")
        if vae_config.sp:
            raise UserError("vae.sp: MiniMax-H3's VAE decode is not split across ranks; leave vae_sp off",
                            param="vae.sp")
        if not vae_config.load_encoder:
            vae.encoder = None

    def check_request(self, req: Request) -> None:
        super().check_request(req)
        if (req.image_path or req.last_image_path) and self.components["vae"].encoder is None:
            raise UserError("image_path: this run skips the VAE encoder (vae.load_encoder=false), so it cannot take "
                            "keyframes", param="image_path")
