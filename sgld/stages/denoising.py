"""Our denoise loop: classifier-free guidance (batched or per branch), expert switching, callbacks."""

from __future__ import annotations

from contextlib import ExitStack
from itertools import groupby
from typing import Mapping, Sequence

import torch

from sgld.errors import GenerationStopped
from sgld.families import GuidanceKind
from sgld.models.placement import Placement
from sgld.levers.step_hooks import StepHook
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.sample_batch import merge_requests

# How guidance combines the two branches.
CFG_BATCHED = "batched"  # cond and uncond in one forward of batch 2 (same-shaped text inputs)
CFG_SEQUENTIAL = "sequential"  # two forwards (text inputs of different lengths, e.g. Qwen-Image)
CFG_NONE = "none"  # guidance-distilled models (FLUX): one forward, guidance is a model input

# The default way each guidance kind runs its branches.
CFG_MODES = {GuidanceKind.cfg: CFG_BATCHED, GuidanceKind.true_cfg: CFG_SEQUENTIAL, GuidanceKind.embedded: CFG_NONE,
             GuidanceKind.cfg_extra: CFG_BATCHED}


class DenoisingStage(Stage):
    """Runs the DiT over the timesteps and steps the scheduler.

    ``experts`` is ``[(name, module)]``: one entry for most models, two for Wan2.2 A14B,
    where ``transformer`` takes timesteps >= ``boundary_timestep`` (high noise) and
    ``transformer_2`` the rest with ``guidance_scale_2``. The DiT is called with
    ``hidden_states``, ``timestep``, the request's shared ``model_kwargs`` and the
    branch's ``cond_kwargs`` / ``uncond_kwargs``.

    ``timestep_divisor`` divides the scheduler's timestep (FLUX and Qwen-Image take
    t / 1000 in the latents' dtype); ``rescale_cfg`` rescales the guided prediction to the
    conditional one's norm, as Qwen-Image's true CFG does. ``step_hooks`` (by expert name) are
    the model's per-step behaviours (step cache, sliding-tile windows): started once per request
    and entered around every forward of that expert.
    """

    name = "denoise"

    def __init__(
        self,
        experts: Sequence[tuple[str, torch.nn.Module]],
        placement: Placement,
        parallel: ParallelState,
        boundary_timestep: float | None = None,
        *,
        step_hooks: Mapping[str, Sequence[StepHook]] | None = None,
        cfg_mode: str = CFG_BATCHED,
        timestep_divisor: float | None = None,
        rescale_cfg: bool = False,
        token_patch: tuple[int, int] | None = None,
        guidance_offset: float = 0.0,
        timestep_in_dit_dtype: bool = False,
    ):
        self.experts = list(experts)
        self.placement = placement
        self.boundary_timestep = boundary_timestep
        self.cfg_mode = cfg_mode
        self.timestep_divisor = timestep_divisor
        self.rescale_cfg = rescale_cfg
        # Added to every guidance scale: Z-Image's cond + s (cond - uncond) is uncond + (1 + s)(cond - uncond).
        self.guidance_offset = guidance_offset
        # HunyuanVideo-1.5 embeds the timestep in the DiT's dtype (its reference casts it so; bf16 rounds it).
        self.timestep_in_dit_dtype = timestep_in_dit_dtype
        # Wan2.2 TI2V (expand_timesteps): one timestep per latent token, (batch, frames * h/ph * w/pw).
        self.token_patch = token_patch
        # ModelMixin.dtype, as diffusers uses it: some modules stay fp32 (_keep_in_fp32_modules).
        self.dtype = self.experts[0][1].dtype
        self.parallel = parallel
        self.step_hooks = {name: list((step_hooks or {}).get(name, ())) for name, _ in self.experts}

    def expert_schedule(self, timesteps: torch.Tensor) -> list[int]:
        """Index into ``experts`` for every step, computed once on the host before the loop."""
        if self.boundary_timestep is None or len(self.experts) == 1:
            return [0] * len(timesteps)
        return [0 if float(t) >= self.boundary_timestep else 1 for t in timesteps.cpu()]

    def _timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> torch.Tensor:
        if self.token_patch is not None:
            frames, height, width = latents.shape[2:]
            grid = torch.ones(frames, height // self.token_patch[0], width // self.token_patch[1],
                              dtype=torch.float32, device=latents.device)
            if req.first_frame_latents is not None:
                grid[0] = 0  # the given first frame is clean
            return (grid * t).flatten().expand(batch, -1)
        if self.timestep_in_dit_dtype:
            return t.expand(batch).to(self.dtype)
        if self.timestep_divisor is None:
            return t.expand(batch)
        return t.expand(batch).to(latents.dtype) / self.timestep_divisor

    @staticmethod
    def _noise_tokens(out: torch.Tensor, latents: torch.Tensor, req: Request) -> torch.Tensor:
        """The DiT predicts the appended condition tokens too; the scheduler steps only the noise tokens."""
        return out if req.condition_tokens is None else out[:, : latents.shape[1]]

    @staticmethod
    def _with_first_frame(latents: torch.Tensor, req: Request) -> torch.Tensor:
        """Wan2.2 TI2V image-to-video: the latent first frame is the given image's."""
        if req.first_frame_latents is None:
            return latents
        return torch.cat([req.first_frame_latents.to(latents.dtype), latents[:, :, 1:]], dim=2)

    def _model_input(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        """The DiT's hidden_states: the latents plus whatever condition the model appends."""
        x = self._with_first_frame(latents, req)
        if req.condition_channels is not None:
            x = torch.cat([x, req.condition_channels], dim=1)
        x = x.to(self.dtype)
        if req.condition_tokens is not None:
            x = torch.cat([x, req.condition_tokens.to(self.dtype)], dim=1)
        return x

    @staticmethod
    def _guided(cond: torch.Tensor, uncond: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """uncond + scale * (cond - uncond), with each sample's own scale."""
        if len(set(scales)) == 1:
            return uncond + scales[0] * (cond - uncond)
        scale = torch.tensor(scales, device=cond.device, dtype=torch.float32).view(-1, *[1] * (cond.dim() - 1))
        return (uncond + scale * (cond - uncond)).to(cond.dtype)

    def _predict(self, module, latents: torch.Tensor, t: torch.Tensor, req: Request, scales: Sequence[float],
                 step: int) -> torch.Tensor:
        x = self._model_input(latents, req)
        guided = req.uncond_kwargs is not None and self.cfg_mode != CFG_NONE
        if guided and self.parallel.cfg_degree > 1:
            cond, uncond = self._predict_cfg_parallel(module, x, latents, t, req, step)
        elif guided and self.cfg_mode == CFG_BATCHED:
            branch = {k: None if v is None else torch.cat([v, req.uncond_kwargs[k]]) for k, v in req.cond_kwargs.items()}
            out = self._call(module, "cond_uncond", step, hidden_states=torch.cat([x, x]),
                             timestep=self._timestep(t, latents, 2 * x.shape[0], req), **req.model_kwargs, **branch)
            cond, uncond = self._noise_tokens(out, latents, req).chunk(2)
        else:
            timestep = self._timestep(t, latents, x.shape[0], req)
            cond = self._call(module, "cond", step, hidden_states=x, timestep=timestep, **req.model_kwargs, **req.cond_kwargs)
            cond = self._noise_tokens(cond, latents, req)
            if not guided:
                return cond
            uncond = self._call(module, "uncond", step, hidden_states=x, timestep=timestep, **req.model_kwargs, **req.uncond_kwargs)
            uncond = self._noise_tokens(uncond, latents, req)
        combined = self._guided(cond, uncond, scales)
        if self.rescale_cfg:
            combined = combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))
        return combined

    def _call(self, module, branch: str, step: int, **kwargs) -> torch.Tensor:
        """One DiT forward, inside the expert's step hooks (a step cache keeps cond/uncond state apart)."""
        with ExitStack() as stack:
            for hook in self._hooks_of(module):
                stack.enter_context(hook.around_forward(branch, step))
            return module(**kwargs, return_dict=False)[0]

    def _hooks_of(self, module) -> list[StepHook]:
        return next(self.step_hooks[name] for name, expert in self.experts if expert is module)

    def _stop_flags(self, alive: list[Request]) -> list[bool]:
        """Whether each live sample is asked to stop; in a parallel run rank 0's answers, so all ranks agree."""
        asked = [bool(req.stop_check is not None and (self.parallel.world_size == 1 or self.parallel.is_main)
                      and req.stop_check()) for req in alive]
        if self.parallel.world_size == 1:
            return asked
        import torch.distributed as dist

        flags = torch.tensor(asked, dtype=torch.int32, device=self.parallel.device)
        dist.broadcast(flags, src=0)
        return [bool(flag) for flag in flags.tolist()]

    def _report(self, alive: list[Request], done: int, total: int) -> list[Request]:
        """Progress to each sample's callback, then its stop check; the samples that go on.

        A sample whose callback raises (the server's cancel) or whose stop check says so leaves the
        batch with that error; the others continue.
        """
        for req in alive:
            if req.step_callback is not None:
                try:
                    req.step_callback(done, total)
                except Exception as exc:  # noqa: BLE001 - this sample's own signal, kept on it
                    req.error = exc
        if done > 0 and any(req.stop_check is not None for req in alive):
            for req, stop in zip(alive, self._stop_flags(alive)):
                if stop and req.error is None:
                    req.error = GenerationStopped(f"stopped after step {done} of {total}")
        return [req for req in alive if req.error is None]

    def _predict_cfg_parallel(self, module, x, latents, t, req: Request, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CFG parallel: this rank's cfg slice runs one branch; the two predictions are exchanged."""
        import torch.distributed as dist

        branch = req.cond_kwargs if self.parallel.cfg_rank == 0 else req.uncond_kwargs
        mine = self._call(module, "cond" if self.parallel.cfg_rank == 0 else "uncond", step, hidden_states=x,
                          timestep=self._timestep(t, latents, x.shape[0], req), **req.model_kwargs, **branch)
        mine = self._noise_tokens(mine, latents, req).contiguous()
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine, group=self.parallel.cfg_group)
        return both[0], both[1]

    def forward(self, req: Request) -> Request:
        req = self.forward_batch([req])[0]
        if req.error is not None:
            raise req.error
        return req

    @torch.no_grad()
    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        """Denoise requests that share steps and sizes as one batch; each sample keeps its own noise and scheduler.

        A sample that leaves early (see ``_report``) is dropped from the forwards that follow.
        """
        first = reqs[0]
        schedule = self.expert_schedule(first.timesteps)
        total = len(first.timesteps)
        for hooks in self.step_hooks.values():
            for hook in hooks:
                hook.start()
        alive = self._report(list(reqs), 0, total)  # the loop starts now: progress bars time from here
        merged = None
        # Consecutive steps of one expert run together, so an offloaded expert moves once.
        for index, steps in groupby(range(total), key=schedule.__getitem__):
            if not alive:
                break
            name, module = self.experts[index]
            with self.placement.active(name, module):
                for i in steps:
                    if merged is None:  # the live samples' DiT inputs, stacked again after one leaves
                        merged = merge_requests(alive, one_text_length=self.cfg_mode == CFG_BATCHED)
                    scales = [self._scale(req, index) + self.guidance_offset for req in alive]
                    t = first.timesteps[i]
                    latents = alive[0].latents if len(alive) == 1 else torch.cat([req.latents for req in alive])
                    noise = self._predict(module, latents, t, merged, scales, i)
                    for row, req in enumerate(alive):
                        own = noise if len(alive) == 1 else noise[row : row + 1]
                        req.latents = req.scheduler.step(own, t, req.latents, return_dict=False)[0]
                    going_on = self._report(alive, i + 1, total)
                    if len(going_on) != len(alive):
                        alive, merged = going_on, None
                    if not alive:
                        break
        for req in alive:
            req.latents = self._with_first_frame(req.latents, req)
        return reqs

    @staticmethod
    def _scale(req: Request, expert: int) -> float:
        """The sample's guidance scale for this expert (Wan2.2's low-noise expert may have its own)."""
        if expert == 0 or req.guidance_scale_2 is None:
            return req.guidance_scale
        return req.guidance_scale_2
