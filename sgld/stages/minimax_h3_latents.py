"""MiniMax-H3's packed sequence before the loop: condition images VAE-encoded (H3's recipe: ImageNet-normalised
pixels, the posterior sampled under the fixed seed 42, rounded to fp16, per-channel normalised), the layout
(``[text | keyframe rows | audio rows | video rows]``; ref2va: ``[text | reference blocks | audio rows | video
rows]``, each reference one rotary slot), the noise in the reference's order from the request's CPU generator (one
draw per condition image, then video, then audio rows), condition rows held at t = 0.999, and both schedulers'
timesteps with each step's row timestep plan.

diffusers' own helpers build what must stay bit-exact (``encode_vae_condition``, the layouts' fp64 positions
``build_packed_sequence`` and ``build_ref2va_packed_sequence``, ``patchify_video_latents``,
``build_row_timesteps``)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from sgld.minimax_h3_rules import Geometry, Workflow
from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.minimax_h3_denoising import LAYOUT_INPUTS, H3Layout
from sgld.stages.minimax_h3_decoding import IMAGENET_MEAN, IMAGENET_STD, STEREO

AUDIO_TAG, VIDEO_TAG = 2, 0
KEYFRAME_SEED = 42  # the keyframe posterior's own seed, independent of the request's
KEYFRAME_T = 0.999  # the noise level keyframe rows are made at and held at
REFERENCE_AUDIO_T = 1.0  # reference sound rows (ref2va) are clean


class MiniMaxH3LatentStage(Stage):
    """Fills ``latents`` (keyframe rows, then video rows), ``audio_latents`` (rows), both schedulers (copies: the
    step index is per request), ``timesteps`` and the request's ``H3Layout`` (``model_kwargs["layout"]``)."""

    name = "prepare_latents"

    def __init__(self, vae: torch.nn.Module, scheduler, audio_scheduler, geometry: Geometry,
                 patch: tuple[int, int, int], audio_latent_channels: int, placement: Placement, device: torch.device):
        self.vae = vae
        self.scheduler = scheduler
        self.audio_scheduler = audio_scheduler
        self.geometry = geometry
        self.patch = tuple(patch)
        self.audio_latent_channels = audio_latent_channels
        self.placement = placement
        self.device = device

    @torch.no_grad()
    def encode_keyframes(self, keyframes: list) -> list[torch.Tensor]:
        """Each condition image's (keyframe's or reference's) normalised (1, C, 1, h, w) latents through the spatial
        encoder (tiled)."""
        from diffusers.modular_pipelines.minimax_h3.encoders import encode_vae_condition

        with self.placement.active("vae", self.vae) as vae:
            device = next(vae.parameters()).device
            return [encode_vae_condition(vae, torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None, :, None],
                                         IMAGENET_MEAN, IMAGENET_STD, KEYFRAME_SEED) for image in keyframes]

    def layout(self, workflow: Workflow, tags: torch.Tensor, anchors: tuple, encoded: list[torch.Tensor],
               grid: tuple[int, int, int], audio_length: int) -> tuple:
        """The workflow's packed layout: (position ids, row tags, video, audio and text indices, condition video
        rows, condition audio rows)."""
        from diffusers.modular_pipelines.minimax_h3 import MiniMaxH3ImageReference
        from diffusers.modular_pipelines.minimax_h3.before_denoise import (
            MiniMaxH3PrepareLayoutStep, MiniMaxH3Ref2VAPrepareLayoutStep,
        )

        if workflow is Workflow.ref2va:  # image references only: no reference sound rows
            references = [MiniMaxH3ImageReference(image=None) for _ in encoded]  # only their kind is read
            return MiniMaxH3Ref2VAPrepareLayoutStep.build_ref2va_packed_sequence(
                tags, references, encoded, [], *grid, audio_length, self.patch, STEREO, AUDIO_TAG, VIDEO_TAG)
        return MiniMaxH3PrepareLayoutStep.build_packed_sequence(tags, *grid, audio_length, self.patch, STEREO,
                                                                AUDIO_TAG, VIDEO_TAG, anchors)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers.modular_pipelines.minimax_h3.before_denoise import (
            MiniMaxH3SetTimestepsStep, patchify_video_latents,
        )

        g, device = self.geometry, self.device
        frames = g.frames(req.num_frames)
        grid = (g.latent_frames(frames), req.height // self.vae.spatial_compression_ratio,
                req.width // self.vae.spatial_compression_ratio)
        audio_length = g.audio_latents(frames)
        kwargs = dict(req.model_kwargs)
        anchors, tags = kwargs.pop("keyframe_anchors", ()), kwargs.pop("text_token_tags")
        workflow = kwargs.pop("workflow", Workflow.fl2va if anchors else Workflow.t2va)
        encoded = self.encode_keyframes(req.condition_image or [])
        position_ids, token_tags, video_idx, audio_idx, text_idx, cond_video, cond_audio = self.layout(
            workflow, tags, anchors, encoded, grid, audio_length)
        inputs = dict(zip(LAYOUT_INPUTS, (position_ids, token_tags, video_idx, audio_idx, text_idx)))
        inputs = {name: value.to(device) for name, value in inputs.items()}

        generator = req.generator or torch.Generator().manual_seed(req.seed)
        req.generator = generator
        scheduler = copy.deepcopy(self.scheduler)
        condition = []
        for latents in encoded:
            noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=torch.float32)
            condition.append(patchify_video_latents(scheduler.scale_noise(latents.to(device), KEYFRAME_T, noise),
                                                    self.patch))
        video = randn_tensor((1, self.vae.config.latent_channels, *grid), generator=generator, device=device,
                             dtype=torch.float32)
        video_rows = patchify_video_latents(video, self.patch)
        audio_rows = randn_tensor((audio_length * STEREO, self.audio_latent_channels), generator=generator,
                                  device=device, dtype=torch.float32)
        req.latents = torch.cat(condition + [video_rows]) if condition else video_rows
        req.audio_latents = audio_rows

        audio_scheduler = copy.deepcopy(self.audio_scheduler)
        scheduler.set_timesteps(req.num_inference_steps, device=device)
        audio_scheduler.set_timesteps(req.num_inference_steps, device=device)
        plan = [tuple(x.to(device) for x in MiniMaxH3SetTimestepsStep.build_row_timesteps(
                    video_idx, audio_idx, cond_video, cond_audio, text_idx.numel(), float(t), float(audio_t),
                    max(float(t), KEYFRAME_T), REFERENCE_AUDIO_T))
                for t, audio_t in zip(scheduler.timesteps, audio_scheduler.timesteps)]
        req.scheduler, req.audio_scheduler, req.timesteps = scheduler, audio_scheduler, scheduler.timesteps
        kwargs["layout"] = H3Layout(inputs=inputs, row_plan=plan, grid=grid, audio_length=audio_length,
                                    condition_video_rows=cond_video, condition_audio_rows=cond_audio,
                                    partition=workflow.partition)
        req.model_kwargs = kwargs
        req.num_frames = frames
        return req
