"""LTX-2's two-stage recipe between its two denoise passes: the x2 latent upsampler, then stage 2's latents
(re-noised to the first distilled sigma with the request's generator) and schedule.

As diffusers' documented recipe runs it by hand: stage 1 ``output_type="latent"`` (denormalised video latents,
unpacked audio latents), ``LTX2LatentUpsamplePipeline(latents=...)``, then the pipeline again with
``latents``, ``audio_latents``, ``noise_scale=sigmas[0]`` and ``STAGE_2_DISTILLED_SIGMA_VALUES`` on a scheduler
without dynamic shifting or terminal shift. Requests that are not two-stage pass through untouched.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline as Reference
from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.ltx2_decoding import grid_of
from sgld.stages.ltx2_latents import LatentGrid, Ltx2Latents, first_frame_mask
from sgld.stages.ltx2_timesteps import resolution_shift, schedule

# Stage 2's sigmas (the distilled LoRA's): it starts from stage 1's upsampled result re-noised to the first.
STAGE_2_SIGMAS = tuple(STAGE_2_DISTILLED_SIGMA_VALUES)


class Ltx2UpsampleStage(Stage):
    """Stage 1's latents in the VAE's units, video upsampled x2 in space (the upsampler was trained there)."""

    name = "upsample"

    def __init__(self, latents: Ltx2Latents, upsampler, placement: Placement):
        self.latents = latents
        self.upsampler = upsampler
        self.placement = placement

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not req.two_stage:
            return req
        geometry, grid = self.latents, grid_of(req)
        video = geometry.denormalize(geometry.unpack(req.latents, grid))
        with self.placement.active("latent_upsampler", self.upsampler) as upsampler:
            param = next(upsampler.parameters())
            req.latents = upsampler(video.to(device=param.device, dtype=torch.float32).to(param.dtype))
        req.audio_latents = geometry.unpack_audio(geometry.denormalize_audio(req.audio_latents), grid)
        return req


class Ltx2RefineSetupStage(Stage):
    """Stage 2's inputs: upsampled video and stage 1's audio normalised, packed and re-noised (video noise first,
    from the request's generator; an image-to-video first frame is not re-noised and stays clean), positions for
    the new grid, two schedulers on the distilled sigmas, and no unconditional branch (stage 2 is unguided)."""

    name = "refine_setup"

    def __init__(self, latents: Ltx2Latents, scheduler, device: torch.device):
        self.latents = latents
        self.scheduler_cls = type(scheduler)
        self.scheduler_config = scheduler.config
        self.device = device

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not req.two_stage:
            return req
        geometry, noise_scale = self.latents, STAGE_2_SIGMAS[0]
        upsampled = req.latents
        _, _, frames, height, width = upsampled.shape
        grid = LatentGrid(frames, height, width, req.audio_latents.shape[2])
        video = geometry.normalize(upsampled)
        if req.clean_tokens is not None:  # as LTX2ImageToVideoPipeline: noise drawn in the unpacked shape
            mask = first_frame_mask(grid, upsampled.device, upsampled.dtype)
            video = geometry.pack(Reference._create_noised_state(video, noise_scale * (1 - mask), req.generator))
            req.clean_tokens = geometry.pack(mask).squeeze(-1).to(self.device)
        else:
            video = Reference._create_noised_state(geometry.pack(video), noise_scale, req.generator)
        req.latents = video.to(device=self.device, dtype=torch.float32)
        audio = geometry.normalize_audio(geometry.pack_audio(req.audio_latents))
        audio = Reference._create_noised_state(audio, noise_scale, req.generator)
        req.audio_latents = audio.to(device=self.device, dtype=torch.float32)
        req.model_kwargs = geometry.model_kwargs(grid, float(req.fps), self.device)
        scheduler = self.scheduler_cls.from_config(self.scheduler_config, use_dynamic_shifting=False,
                                                   shift_terminal=None)
        schedule(req, scheduler, list(STAGE_2_SIGMAS), resolution_shift(grid.video_tokens, self.scheduler_config),
                 self.device)
        req.uncond_kwargs = None
        return req
