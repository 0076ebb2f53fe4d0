"""The correctness anchor: our frames equal diffusers' WanPipeline on the same folder and settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TOLERANCE = 2 / 255


def reference_frames(folder, prompt, negative_prompt, seed, steps, guidance, guidance_2=None, size=64, frames=9):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        height=size,
        width=size,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return out.frames[0]


@pytest.mark.parametrize(
    "model,guidance_2",
    [("tiny-wan-t2v", None), ("tiny-wan22-t2v", 3.0), ("tiny-wan22-ti2v", None)],
)
def test_frames_match_diffusers(model, guidance_2, request):
    from sgld import DiffGenerator
    from sgld.model_builders.tiny import materialize_tiny

    folder = materialize_tiny(model)
    gen = DiffGenerator.from_pretrained(model)
    settings = dict(seed=11, num_inference_steps=4, guidance_scale=5.0, height=64, width=64, num_frames=9)
    if guidance_2 is not None:
        settings["guidance_scale_2"] = guidance_2
    ours = gen.generate("a curious raccoon playing piano", negative_prompt="blurry, low quality", return_frames=True, save_output=False, **settings)
    ref = reference_frames(folder, "a curious raccoon playing piano", "blurry, low quality", 11, 4, 5.0, guidance_2)
    assert ours.frames.shape == (9, 64, 64, 3) and ours.frames.dtype == np.uint8
    diff = np.abs(ours.frames.astype(np.float64) / 255 - ref).max()
    assert diff <= TOLERANCE, f"max per-pixel difference {diff * 255:.2f}/255"


def test_two_experts_are_both_used(tiny_wan22_folder):
    """Wan2.2: with boundary 0.875 and 4 steps, the first step is the high-noise expert's."""
    from sgld import DiffGenerator

    from sgld.request import Request
    from sgld.stages.denoising import DenoisingStage
    from sgld.stages.timesteps import TimestepPreparationStage

    gen = DiffGenerator.from_pretrained("tiny-wan22-t2v")
    denoise = gen.pipeline.stage(DenoisingStage)
    scheduler_stage = gen.pipeline.stage(TimestepPreparationStage)

    req = scheduler_stage(Request.from_sampling(gen.run.sampling, prompt="x", num_inference_steps=4))
    schedule = denoise.expert_schedule(req.timesteps)
    assert schedule[0] == 0 and schedule[-1] == 1 and set(schedule) == {0, 1}


def test_text_encoding_matches_encode_prompt(tiny_wan_folder):
    from diffusers import WanPipeline

    from sgld import DiffGenerator
    from sgld.request import Request
    from sgld.stages.text_encoding import T5TextEncodingStage

    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    stage = gen.pipeline.stage(T5TextEncodingStage)
    req = stage(Request.from_sampling(gen.run.sampling, prompt="  a red  fox &amp; a cat ", negative_prompt="blurry",
                                      guidance_scale=5.0))
    positive, negative = req.cond_kwargs["encoder_hidden_states"], req.uncond_kwargs["encoder_hidden_states"]
    pipe = WanPipeline.from_pretrained(tiny_wan_folder)
    ref_pos, ref_neg = pipe.encode_prompt("  a red  fox &amp; a cat ", "blurry", max_sequence_length=512, device="cpu")
    torch.testing.assert_close(positive, ref_pos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(negative, ref_neg, rtol=1e-5, atol=1e-5)
