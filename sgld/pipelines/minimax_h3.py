"""MiniMax-H3: text (t2va), text + a first and/or last keyframe (fl2va) or text + reference images (ref2va) to
video with its stereo sound, in one packed sequence denoised by one guidance-distilled forward a step and two
schedulers.

The workflow follows the request's inputs. t2va and fl2va run on the folder's ``transformer/`` partition, ref2va on
``transformer_ref/``; the engine loads the partitions of the workflows it runs (``model.workflows``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES
from sgld.minimax_h3_rules import Geometry, Workflow
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.minimax_h3_decoding import MiniMaxH3AudioDecodingStage, MiniMaxH3VideoDecodingStage
from sgld.stages.minimax_h3_denoising import MiniMaxH3DenoisingStage
from sgld.stages.minimax_h3_latents import MiniMaxH3LatentStage
from sgld.stages.minimax_h3_text import MiniMaxH3ConditionImageStage, MiniMaxH3TextEncodingStage
from sgld.stages.validation import InputValidationStage

# modular_model_index.json's pipeline config (load_components passes its keys through) and the released defaults.
CANVAS_KEYS = {"canvas_short_edge": 768, "canvas_max_pixels": 768 * 1344, "reference_image_short_edge": 2048}
PARTITIONS = tuple(dict.fromkeys(workflow.partition for workflow in Workflow))  # transformer, transformer_ref


class MiniMaxH3Pipeline(Pipeline):
    """Qwen3-VL conditioner (decoder layer 50) -> the packed audio-video DiT (the workflow's partition) -> video VAE
    and audio VAE."""

    spec = FAMILIES["minimax_h3"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        vae, audio_vae = components["vae"], components["audio_vae"]
        # The loaded partitions (load_components leaves the others None): both have the same architecture.
        partitions = [(name, components[name]) for name in PARTITIONS if components.get(name) is not None]
        self.configure_vae(vae)
        step_hooks = {name: self.configure_dit(name, module) for name, module in partitions}
        self.place("text_encoder", "audio_vae")
        dit_config = partitions[0][1].config
        index = {key: components.get(key, default) for key, default in CANVAS_KEYS.items()}
        geometry = Geometry.of_configs(index, vae.config, dit_config)
        self.constraints = replace(self.spec.sizes(vae.config, dit_config), rules=geometry)
        self.sample_rate = int(audio_vae.config.sampling_rate)
        patch = tuple(dit_config.patch_size)
        self.stages = [
            InputValidationStage(self.check_request),
            MiniMaxH3ConditionImageStage(geometry),
            MiniMaxH3TextEncodingStage(components["tokenizer"], components["processor"], components["text_encoder"],
                                       self.placement),
            MiniMaxH3LatentStage(vae, components["scheduler"], components["audio_scheduler"], geometry, patch,
                                 audio_vae.config.latent_channels, self.placement, device),
            MiniMaxH3DenoisingStage(partitions, self.placement, parallel, step_hooks=step_hooks),
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
        if (req.image_path or req.last_image_path or req.reference_images) and self.components["vae"].encoder is None:
            param = "reference_images" if req.reference_images else "image_path"
            raise UserError(f"{param}: this run skips the VAE encoder (vae.load_encoder=false), so it cannot take "
                            "keyframes or reference images", param=param)
