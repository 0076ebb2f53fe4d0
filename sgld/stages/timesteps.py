"""Timestep schedule: a fresh scheduler per request (schedulers carry state)."""

from __future__ import annotations

import numpy as np

from sgld.request import Request
from sgld.stages.base import Stage


class TimestepPreparationStage(Stage):
    """Builds the request's scheduler from the model's config (optional flow-shift override).

    ``linear_sigmas``: pass sigmas 1 -> 1/n in n equal steps explicitly, as HunyuanVideo's
    reference does (``np.linspace(1, 0, n + 1)[:-1]``), instead of the scheduler's own spacing.
    """

    name = "timesteps"

    def __init__(self, scheduler, device, linear_sigmas: bool = False):
        self.scheduler_cls = type(scheduler)
        self.scheduler_config = scheduler.config
        self.device = device
        self.linear_sigmas = linear_sigmas
        # UniPC (Wan) calls the shift flow_shift, flow-match Euler (Hunyuan) calls it shift.
        self.shift_key = "flow_shift" if "flow_shift" in scheduler.config else "shift"

    def forward(self, req: Request) -> Request:
        overrides = {self.shift_key: req.flow_shift} if req.flow_shift is not None else {}
        scheduler = self.scheduler_cls.from_config(self.scheduler_config, **overrides)
        n = req.num_inference_steps
        if self.linear_sigmas:
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:-1], device=self.device)
        else:
            scheduler.set_timesteps(n, device=self.device)
        # Starting index known up front: no device-to-host sync to find it inside the loop.
        scheduler.set_begin_index(0)
        req.scheduler = scheduler
        req.timesteps = scheduler.timesteps
        return req
