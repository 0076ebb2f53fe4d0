"""The denoise loop's extension points: guidance rules by kind, and a family that denoises two latents at once.

A video + audio family (each latent with its own scheduler, as LTX-2 is) runs on the shared loop
through a ``DenoisingStage`` subclass and its ``DitAdapter`` alone (docs/architecture.md, Engine):
the toy here is checked against a hand-written loop, batched and alone.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sgld.families import GuidanceKind
from sgld.models.placement import Placement
from sgld.parallel.state import single_process
from sgld.request import Request
from sgld.stages.denoising import DenoisingStage
from sgld.stages.dit_adapter import DitAdapter
from sgld.stages.guidance import RULES, cfg

STEPS = 4


def test_guidance_rules_by_kind():
    cond, uncond = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    cond, uncond = cond[None], uncond[None]
    torch.testing.assert_close(RULES[GuidanceKind.cfg](cond, uncond, [3.0]), uncond + 3.0 * (cond - uncond))
    # Z-Image's cond + s (cond - uncond)
    torch.testing.assert_close(RULES[GuidanceKind.cfg_extra](cond, uncond, [3.0]), cond + 3.0 * (cond - uncond))
    # Qwen-Image's true CFG keeps each token's conditional norm
    rescaled = RULES[GuidanceKind.true_cfg](cond, uncond, [3.0])
    torch.testing.assert_close(rescaled.norm(dim=-1), cond.norm(dim=-1))
    # one scale per sample
    both = cfg(torch.cat([cond, cond]), torch.cat([uncond, uncond]), [2.0, 5.0])
    torch.testing.assert_close(both[1:], uncond + 5.0 * (cond - uncond))


class AudioVideoDit(torch.nn.Module):
    """A joint DiT: each modality's prediction depends on both latents, the timestep and the text."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.video, self.audio = torch.nn.Linear(4, 4), torch.nn.Linear(3, 3)

    def forward(self, hidden_states, audio_hidden_states, timestep, encoder_hidden_states, return_dict=False):
        mix = hidden_states.mean((1, 2), keepdim=True) + audio_hidden_states.mean((1, 2), keepdim=True)
        t = timestep.view(-1, 1, 1) / 1000
        return (self.video(hidden_states) * t + mix + encoder_hidden_states,
                self.audio(audio_hidden_states) * t - mix + encoder_hidden_states)


@dataclasses.dataclass(kw_only=True)
class AudioVideoRequest(Request):
    """The second latents and their scheduler ride on the request."""

    audio_latents: Optional[torch.Tensor] = None
    audio_scheduler: Optional[FlowMatchEulerDiscreteScheduler] = None


class AudioVideoAdapter(DitAdapter):
    """Feeds (video, audio) to the DiT and returns both predictions."""

    def model_input(self, latents, req):
        return tuple(part.to(self.dtype) for part in latents)

    def call(self, module, hidden_states, timestep, kwargs):
        video, audio = hidden_states
        return module(hidden_states=video, audio_hidden_states=audio, timestep=timestep, **kwargs, return_dict=False)


class AudioVideoDenoisingStage(DenoisingStage):
    """Two latents per sample: stacked as a pair, guided part by part, each stepped by its own scheduler."""

    def batch_latents(self, alive):
        return torch.cat([req.latents for req in alive]), torch.cat([req.audio_latents for req in alive])

    def predict(self, module, latents, t, req, scales, step):
        x = self.adapter.model_input(latents, req)
        timestep = self.adapter.timestep(t, latents[0], x[0].shape[0], req)
        cond = self.call_dit(module, "cond", step, x, timestep, {**req.model_kwargs, **req.cond_kwargs})
        if req.uncond_kwargs is None:
            return cond
        uncond = self.call_dit(module, "uncond", step, x, timestep, {**req.model_kwargs, **req.uncond_kwargs})
        return tuple(self.guide(c, u, scales) for c, u in zip(cond, uncond))

    def step_samples(self, alive, prediction, t):
        video, audio = prediction
        for row, req in enumerate(alive):
            req.latents = req.scheduler.step(video[row : row + 1], t, req.latents, return_dict=False)[0]
            req.audio_latents = req.audio_scheduler.step(audio[row : row + 1], t, req.audio_latents,
                                                         return_dict=False)[0]


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    s = FlowMatchEulerDiscreteScheduler()
    s.set_timesteps(STEPS)
    s.set_begin_index(0)
    return s


def audio_video_request(seed: int, scale: float) -> AudioVideoRequest:
    g = torch.Generator().manual_seed(seed)
    req = AudioVideoRequest(prompt="p", negative_prompt="", height=None, width=None, num_frames=1,
                            num_inference_steps=STEPS, guidance_scale=scale, guidance_scale_2=None, seed=seed, fps=1,
                            flow_shift=None)
    req.latents, req.audio_latents = torch.randn(1, 6, 4, generator=g), torch.randn(1, 5, 3, generator=g)
    req.cond_kwargs = {"encoder_hidden_states": torch.randn(1, 1, 1, generator=g)}
    req.uncond_kwargs = {"encoder_hidden_states": torch.randn(1, 1, 1, generator=g)}
    req.scheduler, req.audio_scheduler = scheduler(), scheduler()
    req.timesteps = req.scheduler.timesteps
    return req


def by_hand(dit: AudioVideoDit, req: AudioVideoRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loop: both branches, CFG on each latent, two schedulers."""
    video, audio = req.latents, req.audio_latents
    s_video, s_audio = scheduler(), scheduler()
    for t in s_video.timesteps:
        cond = dit(video, audio, t.expand(1), req.cond_kwargs["encoder_hidden_states"])
        uncond = dit(video, audio, t.expand(1), req.uncond_kwargs["encoder_hidden_states"])
        v, a = (u + req.guidance_scale * (c - u) for c, u in zip(cond, uncond))
        video = s_video.step(v, t, video, return_dict=False)[0]
        audio = s_audio.step(a, t, audio, return_dict=False)[0]
    return video, audio


@pytest.mark.parametrize("count", [1, 3])
def test_a_two_latent_family_runs_on_the_loop_through_a_subclass(count):
    dit = AudioVideoDit()
    stage = AudioVideoDenoisingStage([("transformer", dit)], Placement(torch.device("cpu"), set()),
                                     single_process(torch.device("cpu")), guidance=GuidanceKind.cfg,
                                     adapter=AudioVideoAdapter(torch.float32))
    reqs = [audio_video_request(seed, scale) for seed, scale in zip((1, 2, 3), (3.0, 5.0, 7.0))][:count]
    with torch.no_grad():
        expected = [by_hand(dit, req) for req in reqs]
        done = stage.forward_batch(reqs)
    for req, (video, audio) in zip(done, expected):
        torch.testing.assert_close(req.latents, video)
        torch.testing.assert_close(req.audio_latents, audio)
