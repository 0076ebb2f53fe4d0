"""Timestep schedule: a fresh scheduler per request (schedulers carry state)."""

from __future__ import annotations

from sgld.request import Request
from sgld.stages.base import Stage


class TimestepPreparationStage(Stage):
    """Builds the request's scheduler from the model's config (optional flow-shift override)."""

    name = "timesteps"

    def __init__(self, scheduler, device):
        self.scheduler_cls = type(scheduler)
        self.scheduler_config = scheduler.config
        self.device = device

    def forward(self, req: Request) -> Request:
        overrides = {"flow_shift": req.flow_shift} if req.flow_shift is not None else {}
        scheduler = self.scheduler_cls.from_config(self.scheduler_config, **overrides)
        scheduler.set_timesteps(req.num_inference_steps, device=self.device)
        # Starting index known up front: no device-to-host sync to find it inside the loop.
        scheduler.set_begin_index(0)
        req.scheduler = scheduler
        req.timesteps = scheduler.timesteps
        return req
