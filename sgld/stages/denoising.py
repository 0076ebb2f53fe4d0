"""Our denoise loop: batched classifier-free guidance, expert switching, step callbacks."""

from __future__ import annotations

from itertools import groupby
from typing import Sequence

import torch

from sgld.models.loading import Placement
from sgld.request import Request
from sgld.stages.base import Stage


class DenoisingStage(Stage):
    """Runs the DiT over the timesteps and steps the scheduler.

    ``experts`` is ``[(name, module)]``: one entry for Wan2.1, two for Wan2.2 A14B, where
    ``transformer`` takes timesteps >= ``boundary_timestep`` (high noise) and
    ``transformer_2`` the rest with ``guidance_scale_2``. With guidance on, the conditional
    and unconditional inputs go through the model as one batch of two.
    """

    name = "denoise"

    def __init__(
        self,
        experts: Sequence[tuple[str, torch.nn.Module]],
        placement: Placement,
        boundary_timestep: float | None = None,
    ):
        self.experts = list(experts)
        self.placement = placement
        self.boundary_timestep = boundary_timestep
        # ModelMixin.dtype, as diffusers uses it: some modules stay fp32 (_keep_in_fp32_modules).
        self.dtype = self.experts[0][1].dtype

    def expert_schedule(self, timesteps: torch.Tensor) -> list[int]:
        """Index into ``experts`` for every step, computed once on the host before the loop."""
        if self.boundary_timestep is None or len(self.experts) == 1:
            return [0] * len(timesteps)
        return [0 if float(t) >= self.boundary_timestep else 1 for t in timesteps.cpu()]

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        latents = req.latents
        scheduler = req.scheduler
        schedule = self.expert_schedule(req.timesteps)
        if req.do_cfg:
            context = torch.cat([req.prompt_embeds, req.negative_prompt_embeds]).to(self.dtype)
        else:
            context = req.prompt_embeds.to(self.dtype)
        guidance_2 = req.guidance_scale if req.guidance_scale_2 is None else req.guidance_scale_2
        total = len(req.timesteps)
        # Consecutive steps of one expert run together, so an offloaded expert moves once.
        for index, steps in groupby(range(total), key=schedule.__getitem__):
            name, module = self.experts[index]
            scale = req.guidance_scale if index == 0 else guidance_2
            with self.placement.active(name, module):
                for i in steps:
                    t = req.timesteps[i]
                    x = latents.to(self.dtype)
                    if req.do_cfg:
                        x = torch.cat([x, x])
                    out = module(
                        hidden_states=x,
                        timestep=t.expand(x.shape[0]),
                        encoder_hidden_states=context,
                        return_dict=False,
                    )[0]
                    if req.do_cfg:
                        cond, uncond = out.chunk(2)
                        out = uncond + scale * (cond - uncond)
                    latents = scheduler.step(out, t, latents, return_dict=False)[0]
                    if req.step_callback is not None:
                        req.step_callback(i + 1, total)
        req.latents = latents
        return req
