"""LTX-2's schedules: one flow-match Euler scheduler per latent (a scheduler's step index is its own), same sigmas."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from sgld.request import Request
from sgld.stages.base import Stage


def resolution_shift(video_tokens: int, config: Any) -> float:
    """``mu`` for ``video_tokens`` tokens: linear from base_shift at base_image_seq_len to max_shift at
    max_image_seq_len (the reference's ``calculate_shift`` with its fallbacks); the audio tokens do not count."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

    return calculate_shift(video_tokens, config.get("base_image_seq_len", 1024), config.get("max_image_seq_len", 4096),
                           config.get("base_shift", 0.95), config.get("max_shift", 2.05))


def schedule(req: Request, scheduler, sigmas: Sequence[float], mu: float, device: torch.device) -> None:
    """Give ``req`` ``scheduler`` (a fresh one) and an identical copy for the audio, both set to ``sigmas``."""
    audio = copy.deepcopy(scheduler)
    for each in (audio, scheduler):  # the reference sets the audio copy first; both start at step 0
        each.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        each.set_begin_index(0)
    req.scheduler, req.audio_scheduler, req.timesteps = scheduler, audio, scheduler.timesteps


class Ltx2TimestepStage(Stage):
    """Sigmas 1 -> 1/n in n equal steps, shifted for the video's token count; a scheduler per latent."""

    name = "timesteps"

    def __init__(self, scheduler, device: torch.device):
        self.scheduler_cls = type(scheduler)
        self.scheduler_config = scheduler.config
        self.device = device

    def forward(self, req: Request) -> Request:
        n = req.num_inference_steps
        mu = resolution_shift(req.latents.shape[1], self.scheduler_config)
        schedule(req, self.scheduler_cls.from_config(self.scheduler_config), np.linspace(1.0, 1 / n, n), mu,
                 self.device)
        return req
