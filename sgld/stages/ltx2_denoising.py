"""LTX-2's denoise loop on the shared one: two latents (video, audio), each with its scheduler, and up to four
forwards a step (CFG's two, STG, modality isolation), guided in x0 space (``sgld/stages/ltx2_guidance.py``).

``DenoisingStage`` keeps the expert schedule, placement, batching of live samples, progress, stop checks and
step hooks; this subclass replaces the per-step pieces (``batch_latents``, ``predict``, ``step_samples``) and
its ``Ltx2Dit`` adapter makes the DiT call, returning both predictions.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional, Sequence

import torch

from sgld.families import GuidanceKind, audio_scale
from sgld.models.placement import Placement
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.denoising import DenoisingStage
from sgld.stages.dit_adapter import DitAdapter
from sgld.stages.ltx2_guidance import GuidanceTerms, guide, to_velocity, to_x0

log = logging.getLogger(__name__)

Pair = tuple[torch.Tensor, torch.Tensor]  # (video, audio)
# The DiT inputs with a batch axis that every branch shares (one row per sample; repeated for CFG's two halves).
SHARED_ROWS = ("video_coords", "audio_coords")


class Ltx2Dit(DitAdapter):
    """Feeds (video, audio) tokens with their timesteps; returns both predictions as float32.

    Image-to-video gives each video token its own timestep, 0 on the clean first frame (``req.clean_tokens``);
    the audio keeps the step's. ``sigma`` (LTX-2.3's prompt modulation) is the step's, as the reference passes it.
    """

    def model_input(self, latents: Pair, req: Request) -> Pair:
        return latents[0].to(self.dtype), latents[1].to(self.dtype)

    def timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> dict:
        step = t.expand(batch)
        if req.clean_tokens is None:
            return {"timestep": step, "sigma": step}
        clean = req.clean_tokens.repeat(batch // req.clean_tokens.shape[0], 1)
        return {"timestep": step.unsqueeze(-1) * (1 - clean), "audio_timestep": step, "sigma": step}

    def call(self, module: torch.nn.Module, hidden_states: Pair, timestep: dict, kwargs: dict) -> Pair:
        video, audio = hidden_states
        return module(hidden_states=video, audio_hidden_states=audio, **timestep, **kwargs, return_dict=False)

    def prediction(self, out: Pair, latents: Pair, req: Request) -> Pair:
        return out[0].float(), out[1].float()


def perturbs(module: torch.nn.Module, blocks: Sequence[int]) -> bool:
    """Whether an STG forward differs from the conditional one: only blocks built with ``perturbed_attn``
    (LTX-2.3 and later) skip their self-attention, and only the blocks named that exist."""
    return bool(module.config.get("perturbed_attn")) and any(0 <= b < module.config.num_layers for b in blocks)


class Ltx2DenoisingStage(DenoisingStage):
    """The x0-space guidance of ``LTX2Pipeline``: CFG (a video and an audio scale per sample), STG, modality
    isolation and rescale; both schedulers step their latents, image-to-video's clean first frame stays.

    ``refine``: the two-stage recipe's stage 2 (its own stage instance: guidance off, its steps counted after
    stage 1's in the progress, run inside ``around()`` — the distilled LoRA switched on).

    On a DiT without perturbed attention (LTX-2.0: ``perturbed_attn`` false) the STG forward is the conditional
    forward again, so its term is zero up to rounding: it is skipped (one forward a step fewer at the defaults).
    """

    def __init__(self, transformer: torch.nn.Module, placement: Placement, parallel: ParallelState, *,
                 terms: GuidanceTerms, step_hooks: Sequence = (), refine: bool = False, refine_steps: int = 0,
                 around: Optional[Callable[[], ContextManager]] = None):
        super().__init__([("transformer", transformer)], placement, parallel, guidance=GuidanceKind.audio_video,
                         adapter=Ltx2Dit(transformer.dtype), step_hooks={"transformer": step_hooks})
        self.name = "refine" if refine else "denoise"
        self.terms = terms
        self.refine = refine
        self.refine_steps = refine_steps  # stage 2's step count: stage 1 of a two-stage request counts them too
        self.around = around or nullcontext
        self.stg_runs = terms.stg_on and perturbs(transformer, terms.stg_blocks)
        if terms.stg_on and not self.stg_runs:
            log.info("STG skipped: the DiT has no perturbed attention at blocks %s, so its term is zero",
                     list(terms.stg_blocks))

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        with self.around():
            return super().forward_batch(reqs)

    def batch_latents(self, alive: list[Request]) -> Pair:
        if len(alive) == 1:
            return alive[0].latents, alive[0].audio_latents
        return torch.cat([req.latents for req in alive]), torch.cat([req.audio_latents for req in alive])

    def _scale(self, req: Request, expert: int) -> tuple[float, float]:
        """A sample's (video, audio) CFG scales; stage 2 runs unguided."""
        return (1.0, 1.0) if self.refine else (req.guidance_scale, audio_scale(req))

    def _branch(self, req: Request, text: dict, copies: int = 1) -> dict:
        """The DiT keywords of one branch: the shared inputs (rows repeated ``copies`` times) and ``text``."""
        shared = {k: v.repeat(copies, *[1] * (v.dim() - 1)) if k in SHARED_ROWS else v
                  for k, v in req.model_kwargs.items()}
        return {**shared, **text}

    def _forward(self, module, branch: str, step: int, x: Pair, t: torch.Tensor, req: Request, kwargs: dict) -> Pair:
        out = self.call_dit(module, branch, step, x, self.adapter.timestep(t, x[0], x[0].shape[0], req), kwargs)
        return self.adapter.prediction(out, x, req)

    def predict(self, module: torch.nn.Module, latents: Pair, t: torch.Tensor, req: Request,
                scales: Sequence[tuple[float, float]], step: int) -> Pair:
        x = self.adapter.model_input(latents, req)
        guided = req.uncond_kwargs is not None
        if guided and self.parallel.cfg_degree > 1:
            (cond, uncond), extras = self._predict_cfg_parallel_pair(module, x, t, req, step)
        else:
            if guided:  # one forward of both branches, unconditional first (the reference's batch order)
                text = {k: None if v is None else torch.cat([req.uncond_kwargs[k], v]) for k, v in req.cond_kwargs.items()}
                both = self._forward(module, "cond_uncond", step, tuple(torch.cat([p, p]) for p in x), t, req,
                                     self._branch(req, text, copies=2))
                uncond, cond = zip(*(p.chunk(2) for p in both))
            else:
                cond, uncond = self._forward(module, "cond", step, x, t, req, self._branch(req, req.cond_kwargs)), None
            extras = {name: self._extra(module, name, step, x, t, req) for name in self._extras()}
        sigmas = (req.scheduler.sigmas[step], req.audio_scheduler.sigmas[step])
        x0 = lambda pred: tuple(to_x0(s, p, sigma) for s, p, sigma in zip(latents, pred, sigmas))  # noqa: E731
        cond_x0 = x0(cond)
        uncond_x0 = (None, None) if uncond is None else x0(uncond)
        stg_x0 = x0(extras["stg"]) if "stg" in extras else (None, None)
        isolated_x0 = x0(extras["modality"]) if "modality" in extras else (None, None)
        terms = self.terms
        return tuple(
            to_velocity(latents[m], guide(cond_x0[m], uncond_x0[m], stg_x0[m], isolated_x0[m],
                                          [scale[m] for scale in scales], terms.stg[m], terms.modality[m],
                                          terms.rescale[m]), sigmas[m])
            for m in (0, 1))

    def _extras(self) -> list[str]:
        """The forwards beside CFG this stage runs every step: STG (where it perturbs), modality isolation."""
        if self.refine:
            return []
        return [name for name, on in (("stg", self.stg_runs), ("modality", self.terms.modality_on)) if on]

    def _extra(self, module, name: str, step: int, x: Pair, t: torch.Tensor, req: Request) -> Pair:
        """One of the conditional variants the guidance moves away from: STG-perturbed or modality-isolated."""
        extra = {"spatio_temporal_guidance_blocks": list(self.terms.stg_blocks)} if name == "stg" \
            else {"isolate_modalities": True}
        return self._forward(module, name, step, x, t, req, {**self._branch(req, req.cond_kwargs), **extra})

    def _predict_cfg_parallel_pair(self, module, x: Pair, t: torch.Tensor, req: Request, step: int):
        """CFG parallel: each cfg rank runs one branch, and the extra forwards alternate between the ranks;
        every prediction is all-gathered, so both ranks guide with all of them."""
        import torch.distributed as dist

        rank, group = self.parallel.cfg_rank, self.parallel.cfg_group

        def gather(mine: Optional[Pair], like: Pair) -> list[Pair]:
            mine = mine if mine is not None else tuple(torch.zeros_like(p) for p in like)
            out = []
            for part in mine:
                parts = [torch.empty_like(part) for _ in range(2)]
                dist.all_gather(parts, part.contiguous(), group=group)
                out.append(parts)
            return list(zip(*out))

        text = req.cond_kwargs if rank == 0 else req.uncond_kwargs
        mine = self._forward(module, "cond" if rank == 0 else "uncond", step, x, t, req, self._branch(req, text))
        cond, uncond = gather(mine, mine)
        extras = {}
        for k, name in enumerate(self._extras()):
            owner = k % 2
            result = self._extra(module, name, step, x, t, req) if rank == owner else None
            extras[name] = gather(result, cond)[owner]
        return (cond, uncond), extras

    def step_samples(self, alive: list[Request], prediction: Pair, t: torch.Tensor) -> None:
        """Each sample's schedulers step its rows; a clean first frame keeps its latents (only the other frames
        are stepped in the reference, and the Euler step is elementwise, so this is the same)."""
        video, audio = prediction
        for row, req in enumerate(alive):
            mine = slice(row, row + 1)
            stepped = req.scheduler.step(video[mine], t, req.latents, return_dict=False)[0]
            if req.clean_tokens is not None:
                stepped = torch.where(req.clean_tokens.bool().unsqueeze(-1), req.latents, stepped)
            req.latents = stepped
            req.audio_latents = req.audio_scheduler.step(audio[mine], t, req.audio_latents, return_dict=False)[0]

    def _report(self, alive: list[Request], done: int, total: int) -> list[Request]:
        """Progress over both stages of a two-stage request: stage 2's steps follow stage 1's."""
        first = alive[0]
        if self.refine:
            if done == 0:  # stage 1 reported this point as its last step
                return alive
            return super()._report(alive, first.num_inference_steps + done, first.num_inference_steps + total)
        if first.two_stage:
            return super()._report(alive, done, total + self.refine_steps)
        return super()._report(alive, done, total)
