"""Our denoise loop: guidance branches (batched, per branch, CFG parallel), expert switching, batching of live
samples, step hooks and callbacks; what each family's DiT takes is its ``DitAdapter``'s business."""

from __future__ import annotations

from contextlib import ExitStack
from itertools import groupby
from typing import Mapping, Optional, Sequence

import torch

from sgld.errors import GenerationStopped
from sgld.families import GuidanceKind
from sgld.models.placement import Placement
from sgld.levers.step_hooks import StepHook
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.dit_adapter import DitAdapter
from sgld.stages.guidance import RULES
from sgld.stages.sample_batch import merge_requests

# How the guidance branches run.
CFG_BATCHED = "batched"  # cond and uncond in one forward of batch 2 (same-shaped text inputs)
CFG_SEQUENTIAL = "sequential"  # two forwards (text inputs of different lengths, e.g. Qwen-Image)
CFG_NONE = "none"  # guidance-distilled models (FLUX): one forward, guidance is a model input

# The default way each guidance kind runs its branches.
CFG_MODES = {GuidanceKind.cfg: CFG_BATCHED, GuidanceKind.true_cfg: CFG_SEQUENTIAL, GuidanceKind.embedded: CFG_NONE,
             GuidanceKind.cfg_extra: CFG_BATCHED, GuidanceKind.audio_video: CFG_BATCHED}


class DenoisingStage(Stage):
    """Runs the DiT over the timesteps and steps each sample's scheduler.

    ``experts`` is ``[(name, module)]``: one entry for most models, two for Wan2.2 A14B,
    where ``transformer`` takes timesteps >= ``boundary_timestep`` (high noise) and
    ``transformer_2`` the rest with ``guidance_scale_2``. ``adapter`` is how the family's DiT is
    fed (``DitAdapter``: hidden states, timestep, the request's shared ``model_kwargs`` and the
    branch's ``cond_kwargs`` / ``uncond_kwargs``) and how its output becomes the prediction the
    scheduler steps; the default is diffusers' plain call. ``guidance`` is the family's kind: it
    picks how the branches combine (``sgld/stages/guidance.py``) and, unless ``cfg_mode`` is given,
    how they run (``CFG_MODES``). ``step_hooks`` (by expert name) are the model's per-step
    behaviours (step cache, sliding-tile windows): started once per request and entered around
    every forward of that expert.

    A family whose step is not one latent tensor (video + audio, each with its own scheduler)
    subclasses this stage and replaces the per-step pieces ``batch_latents``, ``predict`` and
    ``step_samples``; the expert schedule, placement, batching of the live samples, progress and
    stop checks, and the step hooks (``call_dit``) stay here.
    """

    name = "denoise"

    def __init__(
        self,
        experts: Sequence[tuple[str, torch.nn.Module]],
        placement: Placement,
        parallel: ParallelState,
        boundary_timestep: float | None = None,
        *,
        guidance: GuidanceKind,
        adapter: DitAdapter | None = None,
        cfg_mode: str | None = None,
        step_hooks: Mapping[str, Sequence[StepHook]] | None = None,
    ):
        self.experts = list(experts)
        self.placement = placement
        self.boundary_timestep = boundary_timestep
        self.guidance = guidance
        self.cfg_mode = CFG_MODES[guidance] if cfg_mode is None else cfg_mode
        self.adapter = DitAdapter(self.experts[0][1].dtype) if adapter is None else adapter
        self.parallel = parallel
        self.step_hooks = {name: list((step_hooks or {}).get(name, ())) for name, _ in self.experts}

    def expert_schedule(self, timesteps: torch.Tensor, first: Optional[Request] = None) -> list[int]:
        """Index into ``experts`` for every step, computed once on the host before the loop (Wan2.2's by the
        boundary timestep; ``first``, the batch's first request, for families whose request picks its DiT)."""
        if self.boundary_timestep is None or len(self.experts) == 1:
            return [0] * len(timesteps)
        return [0 if float(t) >= self.boundary_timestep else 1 for t in timesteps.cpu()]

    def batch_latents(self, alive: list[Request]) -> torch.Tensor:
        """The live samples' latents stacked on the batch axis: what this step's forwards see."""
        return alive[0].latents if len(alive) == 1 else torch.cat([req.latents for req in alive])

    def predict(self, module: torch.nn.Module, latents: torch.Tensor, t: torch.Tensor, req: Request,
                scales: Sequence[float], step: int) -> torch.Tensor:
        """The batch's guided prediction at timestep ``t``; ``req`` is the live samples merged, ``scales`` theirs."""
        adapter = self.adapter
        x = adapter.model_input(latents, req)
        guided = req.uncond_kwargs is not None and self.cfg_mode != CFG_NONE
        if guided and self.parallel.cfg_degree > 1:
            cond, uncond = self._predict_cfg_parallel(module, x, latents, t, req, step)
        elif guided and self.cfg_mode == CFG_BATCHED and not self._separate_branches(module):
            branch = {k: None if v is None else torch.cat([v, req.uncond_kwargs[k]]) for k, v in req.cond_kwargs.items()}
            out = self.call_dit(module, "cond_uncond", step, torch.cat([x, x]),
                                adapter.timestep(t, latents, 2 * x.shape[0], req), {**req.model_kwargs, **branch})
            cond, uncond = adapter.prediction(out, latents, req).chunk(2)
        else:
            timestep = adapter.timestep(t, latents, x.shape[0], req)
            cond = self.call_dit(module, "cond", step, x, timestep, {**req.model_kwargs, **req.cond_kwargs})
            cond = adapter.prediction(cond, latents, req)
            if not guided:
                return cond
            uncond = self.call_dit(module, "uncond", step, x, timestep, {**req.model_kwargs, **req.uncond_kwargs})
            uncond = adapter.prediction(uncond, latents, req)
        return self.guide(cond, uncond, scales)

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """The two branches combined by the family's guidance kind, with each sample's scale."""
        return RULES[self.guidance](cond, uncond, scales)

    def step_samples(self, alive: list[Request], prediction: torch.Tensor, t: torch.Tensor) -> None:
        """Each live sample's scheduler steps its rows of the batch's prediction."""
        for row, req in enumerate(alive):
            own = prediction if len(alive) == 1 else prediction[row : row + 1]
            req.latents = req.scheduler.step(own, t, req.latents, return_dict=False)[0]

    def call_dit(self, module: torch.nn.Module, branch: str, step: int, hidden_states: torch.Tensor,
                 timestep: torch.Tensor, kwargs: dict):
        """One DiT forward through the adapter, inside the expert's step hooks (a step cache keeps cond/uncond
        state apart by ``branch``); the DiT's raw output."""
        with ExitStack() as stack:
            for hook in self._hooks_of(module):
                stack.enter_context(hook.around_forward(branch, step))
            return self.adapter.call(module, hidden_states, timestep, kwargs)

    def _hooks_of(self, module) -> list[StepHook]:
        return next(self.step_hooks[name] for name, expert in self.experts if expert is module)

    def _separate_branches(self, module) -> bool:
        """Whether a step hook of this expert needs the guided branches as separate forwards (cond first)."""
        return any(hook.separate_branches() for hook in self._hooks_of(module))

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

        cond_rank = self.parallel.cfg_rank == 0
        branch = req.cond_kwargs if cond_rank else req.uncond_kwargs
        mine = self.call_dit(module, "cond" if cond_rank else "uncond", step, x,
                             self.adapter.timestep(t, latents, x.shape[0], req), {**req.model_kwargs, **branch})
        mine = self.adapter.prediction(mine, latents, req).contiguous()
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
        schedule = self.expert_schedule(first.timesteps, first)
        total = len(first.timesteps)
        for hooks in self.step_hooks.values():
            for hook in hooks:
                hook.start(first)
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
                    scales = [self._scale(req, index) for req in alive]
                    t = first.timesteps[i]
                    prediction = self.predict(module, self.batch_latents(alive), t, merged, scales, i)
                    self.step_samples(alive, prediction, t)
                    going_on = self._report(alive, i + 1, total)
                    if len(going_on) != len(alive):
                        alive, merged = going_on, None
                    if not alive:
                        break
        for req in alive:
            req.latents = self.adapter.finish(req.latents, req)
        return reqs

    @staticmethod
    def _scale(req: Request, expert: int) -> float:
        """The sample's guidance scale for this expert (Wan2.2's low-noise expert may have its own)."""
        if expert == 0 or req.guidance_scale_2 is None:
            return req.guidance_scale
        return req.guidance_scale_2
