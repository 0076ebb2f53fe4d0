"""Tiny LTX-2: diffusers' LTX-2 pipelines load and run the folder; video and sound follow prompt, seed and guidance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

MIN_CHANGE = 20  # of 255, as for every tiny model
# Measured on the tiny model (prompt 0.16, seed 0.51, guidance 0.35 peak change): a third of the smallest.
MIN_WAVE_CHANGE = 0.05
PROMPT = "a red fox running through snow"
FRAMES, FPS, SIZE = 9, 24, 64
# LTX-2.0's reference uses STG at block 29 of 48; the tiny DiT has 2 blocks.
STG_BLOCKS = [1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from sgld.model_builders.tiny_ltx2 import build_tiny_ltx2

    path = tmp_path_factory.mktemp("tiny-ltx2")
    build_tiny_ltx2(path)
    return path


@pytest.fixture(scope="module")
def pipe(folder):
    from diffusers import LTX2Pipeline

    pipeline = LTX2Pipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _call(pipeline, prompt=PROMPT, seed=7, **settings):
    import torch

    args = dict(negative_prompt="blurry", height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
                num_inference_steps=3, spatio_temporal_guidance_blocks=STG_BLOCKS, output_type="np", return_dict=False)
    args.update(settings)
    return pipeline(prompt=prompt, generator=torch.Generator().manual_seed(seed), **args)


@pytest.fixture(scope="module")
def run(pipe):
    """``run(**changes)``: (uint8 frames (F, H, W, 3), float waveform (channels, samples)) of one T2AV call."""
    def go(**settings):
        video, audio = _call(pipe, **settings)
        return (video[0] * 255).round().astype(np.uint8), audio[0].float().numpy()

    return go


@pytest.fixture(scope="module")
def base(run):
    return run()


def _changes(a, b) -> tuple[int, float]:
    return int(np.abs(a[0].astype(int) - b[0].astype(int)).max()), float(np.abs(a[1] - b[1]).max())


def test_frames_and_waveform_have_the_shapes_the_duration_gives(pipe, base):
    frames, wave = base
    rate = pipe.vocoder.config.output_sampling_rate
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and rate == 24000 and wave.dtype == np.float32
    # 25 audio latents a second, each 4 mel frames less 3 (causal), each mel frame 240 samples at 24 kHz:
    # the waveform is duration x rate to within the rounding to whole latents (here 45 ms short of 0.375 s).
    latents = round(FRAMES / FPS * 25)
    assert wave.shape == (2, (4 * latents - 3) * 240)
    assert abs(wave.shape[1] / rate - FRAMES / FPS) < 2 / FPS
    assert np.abs(wave).max() <= 1.0 and wave.std() > 0.05


def test_prompt_moves_frames_and_sound(run, base):
    frames, wave = _changes(base, run(prompt="a blue robot dancing on stage"))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_seed_moves_frames_and_sound(run, base):
    frames, wave = _changes(base, run(seed=8))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_guidance_moves_frames_and_sound(run, base):
    frames, wave = _changes(base, run(guidance_scale=1.5, audio_guidance_scale=2.0))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_same_settings_give_the_same_video_and_sound(run, base):
    assert _changes(base, run()) == (0, 0.0)


def _digest(folder) -> str:
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in (".safetensors", ".json"):
            digest.update(file.relative_to(folder).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def test_build_is_deterministic_and_in_the_released_layout(folder, tmp_path):
    import json

    from sgld.model_builders.tiny_ltx2 import DISTILLED_LORA, UPSAMPLER_SUBFOLDER, build_tiny_ltx2

    build_tiny_ltx2(tmp_path)
    assert _digest(tmp_path) == _digest(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "LTX2Pipeline" and index["text_encoder"][1] == "Gemma3ForConditionalGeneration"
    for name in ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", UPSAMPLER_SUBFOLDER):
        assert list((folder / name).glob("*.safetensors")) and not list((folder / name).glob("*.bin")), name
    assert (folder / DISTILLED_LORA).is_file() and (folder / "tokenizer" / "tokenizer.json").is_file()


def test_tokenizer_is_gemma_style():
    from sgld.model_builders.tiny_ltx2 import build_gemma3_tokenizer

    tokenizer = build_gemma3_tokenizer()
    ids = tokenizer("a red fox").input_ids
    assert type(tokenizer).__name__ == "GemmaTokenizer" and tokenizer.padding_side == "left"
    assert ids[0] == tokenizer.bos_token_id == 2 and tokenizer.pad_token_id == 0
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == ["a", "\u2581red", "\u2581fox"]
    assert tokenizer.decode(tokenizer("Zebra é!").input_ids, skip_special_tokens=True) == "Zebra é!"  # byte fallback


def test_image_to_video_loads_the_same_folder_and_follows_the_image(folder):
    from diffusers import LTX2ImageToVideoPipeline
    from PIL import Image

    i2v = LTX2ImageToVideoPipeline.from_pretrained(folder)
    i2v.set_progress_bar_config(disable=True)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    images = [Image.fromarray(np.stack(c, axis=-1).astype(np.uint8))
              for c in ((x * 4, y * 4, 255 - x * 4), (255 - y * 4, x * 2, y * 4))]
    (v1, a1), (v2, a2) = (_call(i2v, image=image) for image in images)
    assert v1.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert np.abs(v1 - v2).max() * 255 >= MIN_CHANGE and float((a1 - a2).abs().max()) > 0


def test_two_stage_recipe_runs_on_the_folder(folder, pipe, tmp_path):
    """diffusers' documented recipe: stage 1 latents, the latent upsampler (x2), the distilled LoRA on 3 sigmas."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline, LTX2Pipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

    from sgld.model_builders.tiny_ltx2 import DISTILLED_LORA, UPSAMPLER_SUBFOLDER, build_tiny_ltx2_upsampler

    video_latents, audio_latents = _call(pipe, output_type="latent")
    upsampler = LTX2LatentUpsamplerModel.from_pretrained(folder, subfolder=UPSAMPLER_SUBFOLDER)
    upsampled = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
        latents=video_latents, output_type="latent", return_dict=False)[0]
    assert upsampled.shape[-2:] == tuple(2 * n for n in video_latents.shape[-2:])
    # The standalone upsampler folder (the layout of the released upsampler repos) holds the same weights.
    build_tiny_ltx2_upsampler(tmp_path)
    standalone = LTX2LatentUpsamplePipeline.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(standalone.latent_upsampler.state_dict().values(),
                                                 upsampler.state_dict().values()))
    stage2 = LTX2Pipeline.from_pretrained(folder)  # its own copy: the LoRA and scheduler stay out of ``pipe``
    stage2.set_progress_bar_config(disable=True)
    stage2.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        stage2.scheduler.config, use_dynamic_shifting=False, shift_terminal=None)
    stage2.load_lora_weights(folder, adapter_name="stage_2_distilled", weight_name=DISTILLED_LORA)
    stage2.set_adapters("stage_2_distilled", 1.0)
    video, audio = _call(stage2, latents=upsampled, audio_latents=audio_latents, height=2 * SIZE, width=2 * SIZE,
                         noise_scale=STAGE_2_DISTILLED_SIGMA_VALUES[0], sigmas=STAGE_2_DISTILLED_SIGMA_VALUES,
                         guidance_scale=1.0)
    assert video.shape == (1, FRAMES, 2 * SIZE, 2 * SIZE, 3) and audio.shape[:2] == (1, 2)
