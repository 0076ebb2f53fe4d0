"""MiniMax-H3's denoise on the shared loop: one packed sequence (text, condition rows, audio rows, video rows), one
forward a step (guidance-distilled), and two schedulers (video shift 12, audio shift 3) stepping only the generated
rows, as diffusers' ``MiniMaxH3DenoiseStep`` does.

``DenoisingStage`` keeps placement, progress, stop checks and step hooks; this subclass replaces the per-step
pieces and its ``MiniMaxH3Dit`` adapter makes the DiT call. Each sample is its own layout (the text's token count
sets every position) and the DiT takes no mask to pad with, so samples of a batch never share a forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from sgld.families import GuidanceKind
from sgld.models.placement import Placement
from sgld.levers.step_hooks import StepHook
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.denoising import CFG_NONE, DenoisingStage
from sgld.stages.dit_adapter import DitAdapter

Pair = tuple[torch.Tensor, torch.Tensor]  # (video rows, audio rows)
# The layout's DiT inputs, by the transformer's own parameter names (diffusers' ``denoiser_input_fields``).
LAYOUT_INPUTS = ("position_ids", "token_tags", "video_indices", "audio_indices", "text_indices")


@dataclass
class H3Layout:
    """One request's packed sequence: the DiT's layout inputs and what the step needs besides the latents.

    ``row_plan[i]``: step ``i``'s distinct row timesteps and each row's index into them (diffusers'
    ``MiniMaxH3SetTimestepsStep.build_row_timesteps``); ``condition_video_rows`` / ``condition_audio_rows``: the
    leading rows the schedulers leave alone (keyframe or reference latents, reference sound); ``grid``: the
    generated video's latent (frames, height, width); ``audio_length``: its audio latents per stereo channel;
    ``partition``: the DiT that denoises it (the workflow's: ``transformer``, or ``transformer_ref`` for ref2va).
    """

    inputs: dict[str, torch.Tensor]
    row_plan: list[tuple[torch.Tensor, torch.Tensor]]
    grid: tuple[int, int, int]
    audio_length: int
    condition_video_rows: int = 0
    condition_audio_rows: int = 0
    partition: str = "transformer"


class MiniMaxH3Dit(DitAdapter):
    """Feeds the video and audio rows (a batch axis of one added), the prompt and the layout; returns both
    velocities. ``timestep`` is the step's (distinct timesteps, row indices) pair.

    The rows go in as float32, as the reference passes them: the DiT keeps its input projections in float32
    (``_keep_in_fp32_modules``) and casts each input to its projection's dtype itself."""

    def model_input(self, latents: Pair, req: Request) -> Pair:
        return latents[0][None], latents[1][None]

    def call(self, module: torch.nn.Module, hidden_states: Pair, timestep: tuple[torch.Tensor, torch.Tensor],
             kwargs: dict) -> Pair:
        video, audio = hidden_states
        unique, indices = timestep
        return module(hidden_states=video, audio_hidden_states=audio, timestep=unique, timestep_indices=indices,
                      **kwargs, return_dict=False)

    def prediction(self, out: Pair, latents: Pair, req: Request) -> Pair:
        return out[0][0].float(), out[1][0].float()


class MiniMaxH3DenoisingStage(DenoisingStage):
    """The loop over ``req.timesteps`` (the video scheduler's); the request carries ``latents`` (video rows,
    condition rows first), ``audio_latents`` (audio rows), both schedulers, ``cond_kwargs`` (the prompt's
    ``encoder_hidden_states``) and its ``H3Layout`` in ``model_kwargs["layout"]``, whose ``partition`` picks the
    DiT among the loaded ``partitions`` ([(name, module)])."""

    def __init__(self, partitions: Sequence[tuple[str, torch.nn.Module]], placement: Placement,
                 parallel: ParallelState, *, step_hooks: Mapping[str, Sequence[StepHook]] | None = None):
        super().__init__(partitions, placement, parallel, guidance=GuidanceKind.embedded,
                         adapter=MiniMaxH3Dit(partitions[0][1].dtype), cfg_mode=CFG_NONE, step_hooks=step_hooks)

    def expert_schedule(self, timesteps: torch.Tensor, first: Optional[Request] = None) -> list[int]:
        """Every step on the request's partition (``check_loaded`` refused requests whose partition is not loaded)."""
        names = [name for name, _ in self.experts]
        return [names.index(first.model_kwargs["layout"].partition)] * len(timesteps)

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        """Each sample alone: its layout is its own (see the module's docstring)."""
        for req in reqs:
            super().forward_batch([req])
        return reqs

    def batch_latents(self, alive: list[Request]) -> Pair:
        (req,) = alive
        return req.latents, req.audio_latents

    def predict(self, module: torch.nn.Module, latents: Pair, t: torch.Tensor, req: Request,
                scales: Sequence[float], step: int) -> Pair:
        layout: H3Layout = req.model_kwargs["layout"]
        out = self.call_dit(module, "cond", step, self.adapter.model_input(latents, req), layout.row_plan[step],
                            {**layout.inputs, **req.cond_kwargs})
        return self.adapter.prediction(out, latents, req)

    def step_samples(self, alive: list[Request], prediction: Pair, t: torch.Tensor) -> None:
        """Only the generated rows step; the audio scheduler at its own timestep of this step."""
        (req,) = alive
        layout: H3Layout = req.model_kwargs["layout"]
        video, audio = prediction
        nv, na = layout.condition_video_rows, layout.condition_audio_rows
        req.latents[nv:] = req.scheduler.step(video[nv:], t, req.latents[nv:], return_dict=False)[0]
        audio_scheduler = req.audio_scheduler
        audio_t = audio_scheduler.timesteps[audio_scheduler.step_index or 0]
        req.audio_latents[na:] = audio_scheduler.step(audio[na:], audio_t, req.audio_latents[na:],
                                                      return_dict=False)[0]
