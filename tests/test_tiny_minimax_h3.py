"""Tiny MiniMax-H3: diffusers' modular pipeline loads the folder and runs t2va, fl2va and ref2va on it; frames and
the stereo waveform follow prompt, seed, keyframes and references; the build is deterministic."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

MIN_CHANGE = 20  # of 255, as for every tiny model
# Measured on the tiny model (max abs change): prompt 0.095 / 0.029 / 0.026 (t2va / fl2va / ref2va), seed >= 0.33,
# first keyframe 0.110, last keyframe 0.106 (0.063 after a fixed first one), reference image 0.070. Frames moved
# 49/255 (ref2va prompt) to 255. A third of the smallest waveform change:
MIN_WAVE_CHANGE = 0.008
PROMPT = "a red fox running through snow"
OTHER_PROMPT = "a blue robot dancing on stage"
# The shortest request the pipeline takes: 5 s at its fixed 24 fps, snapped up to 17n + 5 frames.
FRAMES, FPS = 124, 24
STEPS = 3  # sigma grid points, the terminal 0 included: two forwards


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from sgld.model_builders.tiny_minimax_h3 import build_tiny_minimax_h3

    path = tmp_path_factory.mktemp("tiny-minimax-h3")
    build_tiny_minimax_h3(path)
    return path


def _load(folder):
    """The modular pipeline with every component loaded in fp32 (no workflow: both transformer partitions).

    Without torchvision transformers cannot build the processor's video half, so ``load_components`` would leave
    the processor unset; it is loaded by sgld's helper, which gives the same tokenizer and image processor.
    """
    import torch
    from diffusers import ModularPipeline

    from sgld.model_builders.qwen3vl_processor import load_qwen3vl_processor

    pipe = ModularPipeline.from_pretrained(str(folder))
    names = [name for name, spec in pipe._component_specs.items()
             if spec.default_creation_method == "from_pretrained" and name != "processor"]
    pipe.load_components(names=names, dtype=torch.float32)
    pipe.update_components(processor=load_qwen3vl_processor(folder / "processor"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(folder):
    """One pipeline for the three workflows: each call picks its own from its inputs, as the reference does."""
    return _load(folder)


def _image(width: int, height: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(x * rng.uniform(2, 9) + y * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    return Image.fromarray(((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8))


# Portrait keyframes (the canvas follows the first one) and square references (they never set the canvas).
FIRST, LAST, OTHER = _image(40, 72, 1), _image(40, 72, 2), _image(40, 72, 3)
REFERENCE, OTHER_REFERENCE = _image(48, 48, 4), _image(48, 48, 5)


@pytest.fixture(scope="module")
def run(pipe):
    """``run(workflow, **changes)``: (uint8 frames (F, H, W, 3), float waveform (2, samples), sample rate)."""
    import torch
    from diffusers.modular_pipelines.minimax_h3 import MiniMaxH3ImageReference

    inputs = {"t2va": {}, "fl2va": {"image": FIRST}, "ref2va": {"references": [REFERENCE]}}
    done = {}

    def go(workflow: str, prompt: str = PROMPT, seed: int = 7, **changes):
        settings = {**inputs[workflow], **changes}
        # Images count by identity: the module's images are built once.
        key = (workflow, prompt, seed, tuple((k, tuple(map(id, v)) if isinstance(v, list) else id(v))
                                             for k, v in sorted(settings.items())))
        if key not in done:
            if "references" in settings:
                settings["references"] = [MiniMaxH3ImageReference(image=image) for image in settings["references"]]
            state = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), num_frames=FRAMES,
                         num_inference_steps=STEPS, output_type="np", **settings)
            frames = (np.asarray(state.get("videos"))[0] * 255).round().astype(np.uint8)
            done[key] = frames, state.get("audio")[0].float().numpy(), state.get("sampling_rate")
        return done[key]

    return go


def _changes(a, b) -> tuple[int, float]:
    return int(np.abs(a[0].astype(int) - b[0].astype(int)).max()), float(np.abs(a[1] - b[1]).max())


@pytest.mark.parametrize("workflow, canvas", [("t2va", (32, 64)), ("fl2va", (64, 32)), ("ref2va", (32, 64))])
def test_frames_and_stereo_waveform_have_the_shapes_the_duration_gives(run, workflow, canvas):
    frames, wave, rate = run(workflow)
    # t2va and ref2va take the 16:9 canvas of the folder's config (short edge 32), fl2va the first keyframe's aspect.
    assert frames.shape == (FRAMES, *canvas, 3)
    # 40 audio latents a second of the frames' duration, each 800 samples at 32 kHz, one row per stereo channel.
    latents = round(FRAMES / FPS * 40)
    assert rate == 32000 and wave.dtype == np.float32 and wave.shape == (2, latents * 800)
    assert abs(wave.shape[1] / rate - FRAMES / FPS) < 1 / 40
    assert np.abs(wave).max() <= 1.0 and wave.std() > 0.05 and frames.std() > 20


@pytest.mark.parametrize("workflow", ["t2va", "fl2va", "ref2va"])
def test_prompt_moves_frames_and_sound(run, workflow):
    frames, wave = _changes(run(workflow), run(workflow, prompt=OTHER_PROMPT))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


@pytest.mark.parametrize("workflow", ["t2va", "fl2va", "ref2va"])
def test_seed_moves_frames_and_sound(run, workflow):
    frames, wave = _changes(run(workflow), run(workflow, seed=8))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_same_settings_give_the_same_video_and_sound(pipe, run):
    import torch

    first = run("t2va")
    state = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(7), num_frames=FRAMES,
                 num_inference_steps=STEPS, output_type="np")
    again = ((np.asarray(state.get("videos"))[0] * 255).round().astype(np.uint8), state.get("audio")[0].numpy())
    assert _changes(first, again) == (0, 0.0)


@pytest.mark.parametrize("keyframes, changed", [
    ({"image": FIRST}, {"image": OTHER}),  # a different first frame
    ({"image": None, "last_image": LAST}, {"image": None, "last_image": OTHER}),  # a different last frame, alone
    ({"image": FIRST, "last_image": LAST}, {"image": FIRST, "last_image": OTHER}),  # ... after a fixed first frame
], ids=["first", "last", "first_and_last"])
def test_a_different_keyframe_moves_frames_and_sound(run, keyframes, changed):
    frames, wave = _changes(run("fl2va", **keyframes), run("fl2va", **changed))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_a_different_reference_image_moves_frames_and_sound(run):
    frames, wave = _changes(run("ref2va"), run("ref2va", references=[OTHER_REFERENCE]))
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


@pytest.mark.parametrize("settings, message", [
    ({"num_frames": 100}, "between 5.0 and 15.0 seconds"),  # 4.2 s, snapped up to 107 frames
    ({"height": 48, "width": 64}, "multiples of 32"),
    ({"image": _image(100, 20, 6)}, "aspect ratios from 1:4 to 4:1"),
    ({"references": [REFERENCE] * 10}, "at most 9 image references"),
], ids=["too_short", "off_canvas_multiple", "keyframe_aspect", "too_many_references"])
def test_the_reference_refuses_what_its_rules_refuse(pipe, settings, message):
    """The rules sgld's pre-load checks must mirror, as the reference words them."""
    from diffusers.modular_pipelines.minimax_h3 import MiniMaxH3ImageReference

    if "references" in settings:
        settings = {"references": [MiniMaxH3ImageReference(image=image) for image in settings["references"]]}
    with pytest.raises(ValueError, match=message):
        pipe(prompt=PROMPT, num_inference_steps=STEPS, output_type="np", **{"num_frames": FRAMES, **settings})


@pytest.mark.parametrize("workflow, partition, other", [
    ("t2va", "transformer", "transformer_ref"), ("fl2va", "transformer", "transformer_ref"),
    ("ref2va", "transformer_ref", "transformer")])
def test_a_workflow_loads_only_its_partition(folder, workflow, partition, other):
    from diffusers import ModularPipeline

    specs = ModularPipeline.from_pretrained(str(folder), workflow=workflow)._component_specs
    assert partition in specs and other not in specs


def _digest(folder) -> str:
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            digest.update(file.relative_to(folder).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def test_build_is_deterministic_and_in_the_released_layout(folder, tmp_path, pipe):
    from sgld.model_builders.tiny_minimax_h3 import COMPONENTS, REPO_ID, build_tiny_minimax_h3

    build_tiny_minimax_h3(tmp_path)
    assert _digest(tmp_path) == _digest(folder)
    modular = json.loads((folder / "modular_model_index.json").read_text())
    assert modular["_class_name"] == "MiniMaxH3ModularPipeline" and modular["_blocks_class_name"] == "MiniMaxH3Blocks"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "MiniMaxH3Pipeline"
    for name in COMPONENTS:
        # Each entry points at the Hub repo, as in a local copy of it; every component came from the folder.
        assert modular[name][2]["pretrained_model_name_or_path"] == REPO_ID and getattr(pipe, name) is not None
    for name in ("transformer", "transformer_ref", "vae", "audio_vae", "text_encoder"):
        assert list((folder / name).glob("*.safetensors")) and not list((folder / name).glob("*.bin")), name
    assert type(pipe).__name__ == "MiniMaxH3ModularPipeline"
    assert (pipe.scheduler.config.shift, pipe.audio_scheduler.config.shift) == (12.0, 3.0)
    assert pipe.text_encoder.config.text_config.num_hidden_layers > pipe.text_encoder_layer == 50


def test_tokenizer_knows_the_labels_and_vision_tokens():
    from sgld.model_builders.tiny_minimax_h3 import build_h3_tokenizer

    tokenizer = build_h3_tokenizer()
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    # As in Qwen's vocabulary, digits stay single tokens and the label words are whole.
    assert tokenizer.tokenize("<Picture 1>: ") == ["<Picture", "\u0120", "1", ">:", "\u0120"]
    for token in ("<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>"):
        assert tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(token)) == token
    assert tokenizer.decode(tokenizer("Zebra é!", add_special_tokens=False).input_ids) == "Zebra é!"  # byte level
