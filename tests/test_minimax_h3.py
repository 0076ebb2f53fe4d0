"""MiniMax-H3's denoise and decode stages on the tiny model: given the packed sequence diffusers'
``MiniMaxH3ModularPipeline`` builds for t2va, fl2va and ref2va (captured as its denoise loop starts), sgld's
``MiniMaxH3DenoisingStage`` on the shared loop and its decoding stages give the reference's latents, frames and
stereo waveform; prompt, seed, keyframes and references reach the output through them.

fp32 on one torch thread (``tests/test_tiny_minimax_h3.py`` says why).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

FRAMES_TOLERANCE = 2  # of 255, per pixel
WAVE_TOLERANCE = 1e-4  # absolute, fp32
MIN_CHANGE = 20  # of 255
MIN_WAVE_CHANGE = 0.008  # a third of the smallest change the reference's tiny runs make (test_tiny_minimax_h3.py)
PROMPT, OTHER_PROMPT = "a red fox running through snow", "a blue robot dancing on stage"
FRAMES, STEPS, SEED = 124, 3, 7


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """The reference on the tiny folder, every component in fp32 (the processor through sgld's loader, as
    tests/test_tiny_minimax_h3.py explains)."""
    import torch
    from diffusers import ModularPipeline

    from sgld.model_builders.qwen3vl_processor import load_qwen3vl_processor
    from sgld.model_builders.tiny_minimax_h3 import build_tiny_minimax_h3

    folder = tmp_path_factory.mktemp("tiny-minimax-h3")
    build_tiny_minimax_h3(folder)
    pipe = ModularPipeline.from_pretrained(str(folder))
    names = [name for name, spec in pipe._component_specs.items()
             if spec.default_creation_method == "from_pretrained" and name != "processor"]
    pipe.load_components(names=names, dtype=torch.float32)
    pipe.update_components(processor=load_qwen3vl_processor(folder / "processor"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(width: int, height: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(x * rng.uniform(2, 9) + y * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    return Image.fromarray(((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8))


FIRST, LAST, REFERENCE, OTHER_REFERENCE = _image(40, 72, 1), _image(40, 72, 2), _image(48, 48, 4), _image(48, 48, 5)
INPUTS = {"t2va": {}, "fl2va": {"image": FIRST}, "fl2va_last": {"image": FIRST, "last_image": LAST},
          "ref2va": {"references": [REFERENCE]}}


def _reference(pipe, inputs: dict, prompt: str = PROMPT, seed: int = SEED):
    """The reference's (frames, waveform) and the packed sequence its denoise loop started from."""
    import torch
    from diffusers.modular_pipelines.minimax_h3 import MiniMaxH3ImageReference
    from diffusers.modular_pipelines.minimax_h3.denoise import MiniMaxH3DenoiseLoopWrapper

    captured = {}
    original = MiniMaxH3DenoiseLoopWrapper.__call__

    def capture(self, components, state):
        block = self.get_block_state(state)
        captured.update(
            latents=block.latents.clone(), audio_latents=block.audio_latents.clone(),
            prompt_embeds=block.prompt_embeds.clone(), row_plan=list(block.row_timestep_plan),
            inputs=dict(block.denoiser_input_fields), timesteps=block.timesteps.clone(),
            schedulers=copy.deepcopy((components.scheduler, components.audio_scheduler)),
            condition_rows=(block.num_condition_video_rows, block.num_condition_audio_rows),
            grid=(state.get("num_latent_frames"), state.get("latent_height"), state.get("latent_width")),
            audio_length=state.get("num_audio_latents"),
            partition="transformer_ref" if "references" in inputs else "transformer")
        captured["transformer"] = getattr(components, captured["partition"])
        out = original(self, components, state)
        block = self.get_block_state(state)
        captured["after"] = (block.latents.clone(), block.audio_latents.clone())
        return out

    settings = dict(inputs)
    if "references" in settings:
        settings["references"] = [MiniMaxH3ImageReference(image=image) for image in settings["references"]]
    MiniMaxH3DenoiseLoopWrapper.__call__ = capture
    try:
        state = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), num_frames=FRAMES,
                     num_inference_steps=STEPS, output_type="np", **settings)
    finally:
        MiniMaxH3DenoiseLoopWrapper.__call__ = original
    frames = (np.asarray(state.get("videos"))[0] * 255).round().astype(np.uint8)
    return frames, state.get("audio")[0].float().numpy(), captured


def _ours(pipe, captured):
    """sgld's denoise and decode stages on the captured packed sequence: (frames, waveform, (video, audio) rows)."""
    import torch

    from sgld.models.placement import Placement
    from sgld.parallel.state import single_process
    from sgld.request import Request
    from sgld.stages.minimax_h3_decoding import MiniMaxH3AudioDecodingStage, MiniMaxH3VideoDecodingStage
    from sgld.stages.minimax_h3_denoising import LAYOUT_INPUTS, H3Layout, MiniMaxH3DenoisingStage

    cpu = torch.device("cpu")
    placement, parallel = Placement(cpu, set()), single_process(cpu)
    video_scheduler, audio_scheduler = copy.deepcopy(captured["schedulers"])
    layout = H3Layout(inputs={k: v for k, v in captured["inputs"].items() if k in LAYOUT_INPUTS},
                      row_plan=captured["row_plan"], grid=captured["grid"], audio_length=captured["audio_length"],
                      condition_video_rows=captured["condition_rows"][0],
                      condition_audio_rows=captured["condition_rows"][1], partition=captured["partition"])
    req = Request(prompt=PROMPT, negative_prompt="", height=None, width=None, num_frames=FRAMES,
                  num_inference_steps=STEPS, guidance_scale=1.0, guidance_scale_2=None, seed=SEED, fps=24,
                  flow_shift=None)
    req.latents, req.audio_latents = captured["latents"].clone(), captured["audio_latents"].clone()
    req.scheduler, req.audio_scheduler, req.timesteps = video_scheduler, audio_scheduler, captured["timesteps"]
    req.cond_kwargs = {"encoder_hidden_states": captured["prompt_embeds"]}
    req.model_kwargs = {"layout": layout}
    transformer = captured["transformer"]
    MiniMaxH3DenoisingStage([(captured["partition"], transformer)], placement, parallel).forward(req)
    rows = (req.latents.clone(), req.audio_latents.clone())
    MiniMaxH3VideoDecodingStage(pipe.vae, transformer.config.patch_size, placement, parallel).forward(req)
    MiniMaxH3AudioDecodingStage(pipe.audio_vae, placement, parallel).forward(req)
    return req.frames, req.waveform, rows


@pytest.fixture(scope="module")
def run(pipe):
    """``run(inputs, **changes)``: (reference frames, waveform), (sgld's frames, waveform), and both latent rows."""
    done = {}

    def go(name: str, **changes):
        key = (name, tuple(sorted((k, id(v)) for k, v in changes.items())))
        if key not in done:
            inputs = {**INPUTS[name], **{k: v for k, v in changes.items() if k not in ("prompt", "seed")}}
            extra = {k: v for k, v in changes.items() if k in ("prompt", "seed")}
            frames, wave, captured = _reference(pipe, inputs, **extra)
            ours = _ours(pipe, captured)
            done[key] = (frames, wave), ours[:2], (captured["after"], ours[2])
        return done[key]

    return go


def _distance(a, b) -> tuple[int, float]:
    return int(np.abs(a[0].astype(int) - b[0].astype(int)).max()), float(np.abs(a[1] - b[1]).max())


@pytest.mark.parametrize("workflow", ["t2va", "fl2va", "fl2va_last", "ref2va"])
def test_denoise_and_decode_equal_the_reference(run, workflow):
    import torch

    reference, ours, (reference_rows, our_rows) = run(workflow)
    for theirs, mine in zip(reference_rows, our_rows):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)  # the same ops in the same order
    frames, wave = _distance(reference, ours)
    print(f"{workflow}: frames {frames}/255, waveform {wave:.2e}")
    assert ours[0].shape == reference[0].shape and ours[1].shape == reference[1].shape
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


@pytest.mark.parametrize("workflow, change", [
    ("t2va", dict(prompt=OTHER_PROMPT)), ("t2va", dict(seed=SEED + 1)), ("fl2va", dict(image=LAST)),
    ("fl2va_last", dict(last_image=FIRST)), ("ref2va", dict(references=[OTHER_REFERENCE]))])
def test_inputs_move_sgld_output(run, workflow, change):
    _, base, _ = run(workflow)
    _, moved, _ = run(workflow, **change)
    frames, wave = _distance(base, moved)
    print(f"{workflow} {sorted(change)}: frames {frames}/255, waveform {wave:.3f}")
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """The keyframes and references as PNG files (lossless: the same pixels the reference is handed)."""
    folder = tmp_path_factory.mktemp("h3-keyframes")
    files = {}
    for name, image in (("first", FIRST), ("last", LAST), ("reference", REFERENCE), ("other", OTHER_REFERENCE)):
        files[name] = str(folder / f"{name}.png")
        image.save(files[name])
    return files


def _sgld_stages(pipe, req):
    """Every sgld stage on ``req`` (any workflow), the tiny reference's components: the request after each."""
    import torch

    from sgld.minimax_h3_rules import Geometry
    from sgld.models.placement import Placement
    from sgld.parallel.state import single_process
    from sgld.stages.minimax_h3_decoding import MiniMaxH3AudioDecodingStage, MiniMaxH3VideoDecodingStage
    from sgld.stages.minimax_h3_denoising import MiniMaxH3DenoisingStage
    from sgld.stages.minimax_h3_latents import MiniMaxH3LatentStage
    from sgld.stages.minimax_h3_text import MiniMaxH3ConditionImageStage, MiniMaxH3TextEncodingStage

    cpu = torch.device("cpu")
    placement, parallel = Placement(cpu, set()), single_process(cpu)
    geometry = Geometry(canvas_multiple=pipe.canvas_multiple, short_edge=pipe.config.canvas_short_edge,
                        max_pixels=pipe.config.canvas_max_pixels,
                        reference_short_edge=pipe.config.reference_image_short_edge,
                        frames_per_chunk=pipe.vae_frames_per_chunk, latents_per_chunk=pipe.vae_latents_per_chunk)
    transformer = pipe.transformer
    stages = [MiniMaxH3ConditionImageStage(geometry),
              MiniMaxH3TextEncodingStage(pipe.tokenizer, pipe.processor, pipe.text_encoder, placement),
              MiniMaxH3LatentStage(pipe.vae, pipe.scheduler, pipe.audio_scheduler, geometry,
                                   transformer.config.patch_size, pipe.audio_vae.config.latent_channels, placement, cpu)]
    for stage in stages:
        stage.forward(req)
    before = (req.cond_kwargs["encoder_hidden_states"].clone(), req.latents.clone(), req.audio_latents.clone(),
              req.model_kwargs["layout"])
    partitions = [("transformer", transformer), ("transformer_ref", pipe.transformer_ref)]
    MiniMaxH3DenoisingStage(partitions, placement, parallel).forward(req)
    MiniMaxH3VideoDecodingStage(pipe.vae, transformer.config.patch_size, placement, parallel).forward(req)
    MiniMaxH3AudioDecodingStage(pipe.audio_vae, placement, parallel).forward(req)
    return before, (req.frames, req.waveform)


@pytest.mark.parametrize("workflow", ["t2va", "fl2va", "fl2va_last", "ref2va"])
def test_every_stage_equals_the_reference(pipe, run, image_files, workflow):
    """Keyframes, text, layout, noise and timesteps too: sgld's stages from the request's files to frames and sound."""
    import torch

    from sgld.request import Request

    reference, _, _ = run(workflow)
    _, _, captured = _reference(pipe, INPUTS[workflow])
    paths = {"fl2va": (image_files["first"], None), "fl2va_last": (image_files["first"], image_files["last"])}
    first, last = paths.get(workflow, (None, None))
    req = Request(prompt=PROMPT, negative_prompt="", height=None, width=None, num_frames=FRAMES,
                  num_inference_steps=STEPS, guidance_scale=1.0, guidance_scale_2=None, seed=SEED, fps=24,
                  flow_shift=None, image_path=first, last_image_path=last,
                  reference_images=[image_files["reference"]] if workflow == "ref2va" else None)
    (embeds, video_rows, audio_rows, layout), ours = _sgld_stages(pipe, req)
    for mine, theirs in ((embeds, captured["prompt_embeds"]), (video_rows, captured["latents"]),
                         (audio_rows, captured["audio_latents"])):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    for name, value in layout.inputs.items():
        torch.testing.assert_close(value, captured["inputs"][name], rtol=0, atol=0)
    assert len(layout.row_plan) == len(captured["row_plan"])
    for (unique, index), (their_unique, their_index) in zip(layout.row_plan, captured["row_plan"]):
        assert torch.equal(unique, their_unique) and torch.equal(index, their_index)
    frames, wave = _distance(reference, ours)
    print(f"{workflow} end to end: frames {frames}/255, waveform {wave:.2e}")
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


@pytest.fixture(scope="module")
def generator(generators):
    """The default engine: t2va and fl2va (transformer/ only)."""
    return generators("tiny-minimax-h3")


@pytest.fixture(scope="module")
def ref_generator(sgld_home):
    """An engine of ref2va alone (``--workflows ref2va``: transformer_ref/ only)."""
    from sgld import DiffGenerator

    return DiffGenerator.from_pretrained("tiny-minimax-h3", workflows=["ref2va"])


def _generate(generator, **options):
    settings = dict(prompt=PROMPT, seed=SEED, return_frames=True, save_output=False)
    result = generator.generate(**{**settings, **options})
    return result.frames, result.audio, result


@pytest.mark.parametrize("workflow", ["t2va", "fl2va", "fl2va_last", "last_only", "ref2va"])
def test_generator_equals_the_reference(pipe, generator, ref_generator, image_files, workflow):
    """``model=tiny-minimax-h3`` end to end (the built-in folder: the same builder, so the same weights)."""
    inputs = {**INPUTS, "last_only": {"last_image": LAST}}[workflow]
    files = {"image": ("image_path", image_files["first"]), "last_image": ("last_image_path", image_files["last"]),
             "references": ("reference_image", [image_files["reference"]])}
    frames, wave, _ = _reference(pipe, inputs)
    engine = ref_generator if workflow == "ref2va" else generator
    ours = _generate(engine, **dict(files[key] for key in inputs))
    distance = _distance((frames, wave), ours)
    print(f"{workflow} through DiffGenerator: frames {distance[0]}/255, waveform {distance[1]:.2e}")
    assert ours[0].shape == frames.shape and distance[0] <= FRAMES_TOLERANCE and distance[1] <= WAVE_TOLERANCE


def test_result_carries_the_stereo_sound_and_the_snapped_length(generator):
    frames, wave, result = _generate(generator, num_frames=100 + 24)
    assert result.sample_rate == 32000 and wave.shape == (2, 207 * 800) and frames.shape[0] == 124


@pytest.mark.parametrize("options, message", [
    (dict(guidance_scale=5.0), "guidance_scale=5: MiniMax-H3 is guidance-distilled"),
    (dict(negative_prompt="blurry"), "negative_prompt='blurry'"),
    (dict(flow_shift=5.0), "flow_shift=5"),
    (dict(fps=30), "fps=30: MiniMax-H3 generates at 24 fps"),
    (dict(num_frames=100), "num_frames=100 snaps up to 107.*nearest valid: 124"),
    (dict(height=32, width=50), "width=50 must be a multiple of 32.*nearest valid: 32 or 64"),
    (dict(height=32), "height given alone"),
    (dict(audio_guidance_scale=3.0), "audio_guidance_scale"),
])
def test_bad_requests_are_refused_before_any_work(generator, options, message):
    from sgld.errors import UserError

    with pytest.raises(UserError, match=message):
        generator.generate(prompt=PROMPT, save_output=False, **options)


def test_a_keyframe_the_canvas_cannot_take_is_refused(generator, tmp_path):
    from sgld.errors import UserError

    wide = tmp_path / "wide.png"
    _image(200, 40, 9).save(wide)
    with pytest.raises(UserError, match=r"image_path is 200x40 .* 1:4 to 4:1"):
        generator.generate(prompt=PROMPT, image_path=str(wide), save_output=False)


def test_run_settings_it_cannot_honour_are_refused_before_loading(sgld_home):
    from sgld.errors import UserError
    from sgld.families import FAMILIES
    from sgld.run_config import run_config_from_options

    spec = FAMILIES["minimax_h3"]
    from sgld.model_builders.tiny import materialize_tiny

    folder = materialize_tiny("tiny-minimax-h3")
    for options, message in ((dict(enable_cfg_parallel=True, num_gpus=2), "cfg_parallel: MiniMax-H3"),
                             (dict(ulysses_degree=4, num_gpus=4), "ulysses_degree=4 must divide the 2 attention heads"),
                             (dict(workflows=["i2v"]), "workflows='i2v' is not a MiniMax-H3 workflow")):
        run = run_config_from_options({"model_path": "tiny-minimax-h3", **options})
        with pytest.raises(UserError, match=message):
            spec.check_run(run, folder)


def _launch(**options):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    base = dict(model_path="tiny-minimax-h3", prompt=PROMPT, seed=3, save_output=False, return_frames=True)
    result = run_generation(run_config_from_options({**base, **options}))
    return result.frames, result.audio


SEQUENCE_LAYOUTS = {"ulysses2": dict(ulysses_degree=2), "ring2": dict(ring_degree=2)}


@pytest.fixture(scope="module")
def sequence_parallel_runs(sgld_home) -> tuple:
    """One process's frames and sound, and each layout's on one launch of 2 gloo ranks."""
    from tests.support.one_group import generate_on_one_group

    base = dict(model_path="tiny-minimax-h3", prompt=PROMPT, seed=3, num_gpus=2)
    ranks = generate_on_one_group([{**base, **layout} for layout in SEQUENCE_LAYOUTS.values()])
    return _launch(), dict(zip(SEQUENCE_LAYOUTS, ranks))


@pytest.mark.parametrize("layout", SEQUENCE_LAYOUTS)
def test_sequence_parallel_equals_one_process(layout, sequence_parallel_runs):
    """2 gloo ranks on the DiT's own _cp_plan (the packed length rarely divides: diffusers' uneven modes); measured
    1/255 and <= 5.4e-7 against one process."""
    one, ranks = sequence_parallel_runs
    frames, wave = _distance(ranks[layout], one)
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


def test_reference_images_the_engine_cannot_take_are_refused_with_the_flag(generator, ref_generator, image_files,
                                                                             tmp_path):
    from sgld.errors import UserError

    too_many = [image_files["reference"]] * 10
    with pytest.raises(UserError, match="10 given; MiniMax-H3 takes at most 9 reference images"):
        generator.generate(prompt=PROMPT, reference_image=too_many, save_output=False)
    with pytest.raises(UserError, match=r"ref2va workflow runs on the folder's transformer_ref/ partition, which this "
                                        r"engine did not load \(it runs t2va, fl2va\); start it with --workflows "
                                        r"t2va fl2va ref2va"):
        generator.generate(prompt=PROMPT, reference_image=[image_files["reference"]], save_output=False)
    with pytest.raises(UserError, match=r"image_path: MiniMax-H3's fl2va workflow .* --workflows fl2va ref2va"):
        ref_generator.generate(prompt=PROMPT, image_path=image_files["first"], save_output=False)
    with pytest.raises(UserError, match="keyframes or references, not both"):
        generator.generate(prompt=PROMPT, image_path=image_files["first"], reference_image=[image_files["last"]],
                           save_output=False)
    wide = tmp_path / "wide.png"
    _image(200, 40, 9).save(wide)
    with pytest.raises(UserError, match=r"reference_images\[1\] is 200x40; .* from 1:4 to 4:1"):
        ref_generator.generate(prompt=PROMPT, reference_image=[image_files["reference"], str(wide)], save_output=False)
    assert ref_generator.pipeline.components.get("transformer") is None  # only the partition its workflow runs on
    assert generator.pipeline.components.get("transformer_ref") is None


def test_the_workflows_option_is_checked_and_picks_the_partitions(sgld_home):
    from sgld.errors import UserError
    from sgld.families import FAMILIES
    from sgld.run_config import run_config_from_options

    spec = FAMILIES["minimax_h3"]
    unloaded = {(): {"transformer_ref"}, ("ref2va",): {"transformer"}, ("t2va", "ref2va"): set()}
    for workflows, expected in unloaded.items():
        run = run_config_from_options({"model_path": "tiny-minimax-h3", "workflows": list(workflows)})
        assert spec.unloaded_components(run) == expected
    one_off = run_config_from_options({"model_path": "tiny-minimax-h3", "reference_image": ["a.png"]})
    assert spec.unloaded_components(one_off) == {"transformer"}  # a generate run with references: ref2va alone
    with pytest.raises(UserError, match="'i2v' is not one of t2va, fl2va, ref2va|workflows='i2v'"):
        spec.check_run(run_config_from_options({"model_path": "tiny-minimax-h3", "workflows": ["i2v"]}))
    with pytest.raises(UserError, match="workflows: wan_t2v models have no workflows to choose"):
        FAMILIES["wan_t2v"].check_run(run_config_from_options({"model_path": "tiny-wan-t2v", "workflows": ["t2va"]}))


def test_other_families_refuse_keyframe_and_reference_inputs():
    from sgld.errors import UserError
    from sgld.families import FAMILIES, SizeConstraints
    from sgld.request import Request

    for field in ("last_image_path", "reference_images"):
        req = Request(prompt=PROMPT, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=2,
                      guidance_scale=5.0, guidance_scale_2=None, seed=SEED, fps=16, flow_shift=None,
                      **{field: "x.png" if field == "last_image_path" else ["x.png"]})
        with pytest.raises(UserError, match=f"{field}: wan_t2v models take no .*MiniMax-H3 does"):
            FAMILIES["wan_t2v"].check_request(req, SizeConstraints(16, 4))


@pytest.mark.parametrize("workflow", ["t2va", "ref2va"])
def test_a_lora_adapter_equals_diffusers_loader(pipe, image_files, tmp_path_factory, workflow):
    """A random adapter on transformer/ (t2va), and one on transformer_ref/ (ref2va; diffusers writes it under its
    own ``transformer_ref.`` prefix): sgld's frames and sound equal the reference pipeline's after its own
    ``load_lora_weights``, and the adapter moves them."""
    from sgld import DiffGenerator
    from sgld.model_builders.tiny import materialize_tiny
    from tests.support.lora import make_lora

    subfolder = "transformer_ref" if workflow == "ref2va" else "transformer"
    file = make_lora(materialize_tiny("tiny-minimax-h3"), tmp_path_factory.mktemp(f"h3-lora-{workflow}"), seed=11,
                     subfolder=subfolder)
    inputs = {"ref2va": {"references": [REFERENCE]}}.get(workflow, {})
    base = _reference(pipe, inputs)[:2]
    pipe.load_lora_weights(str(file))
    try:
        reference = _reference(pipe, inputs)[:2]
    finally:
        pipe.unload_lora_weights()
    engine = DiffGenerator.from_pretrained("tiny-minimax-h3", lora_path=str(file),
                                           workflows=[workflow] if workflow == "ref2va" else [])
    options = {"reference_image": [image_files["reference"]]} if workflow == "ref2va" else {}
    ours = _generate(engine, **options)
    distance, moved = _distance(reference, ours), _distance(base, reference)
    print(f"{workflow} with a LoRA: frames {distance[0]}/255, waveform {distance[1]:.2e}; the adapter moves the "
          f"reference by {moved[0]}/255, {moved[1]:.3f}")
    assert distance[0] <= FRAMES_TOLERANCE and distance[1] <= WAVE_TOLERANCE
    assert moved[0] >= MIN_CHANGE


def test_layerwise_offload_leaves_video_and_sound_unchanged(generator, image_files):
    from sgld import DiffGenerator

    offloaded = DiffGenerator.from_pretrained("tiny-minimax-h3", dit_layerwise_offload=True)
    for options in ({}, {"image_path": image_files["first"], "last_image_path": image_files["last"]}):
        assert _distance(_generate(generator, **options), _generate(offloaded, **options)) == (0, 0.0)


def test_compiled_dit_equals_eager(generator):
    """--enable-torch-compile (regional, the DiT's repeated blocks): measured 1/255 and 4.2e-7 against eager on
    the CPU; a second request compiles nothing new (0.24 s against 12 s)."""
    from sgld import DiffGenerator

    compiled = DiffGenerator.from_pretrained("tiny-minimax-h3", enable_torch_compile=True)
    frames, wave = _distance(_generate(generator), _generate(compiled))
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


def test_the_minimax_h3_bench_runs_tiny_on_the_cpu(tmp_path, sgld_home):
    """bench/minimax_h3.py --tiny: the GPU benchmark's code path (diffusers' modular reference given sgld's
    components, the reference's text encoder brought in by hooks, sgld with its defaults) on the CPU, sgld equal to
    its reference."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "h3.json"
    proc = subprocess.run([sys.executable, "bench/minimax_h3.py", "--tiny", "--text-encoder-offload", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["name"] for r in rows] == ["diffusers", "sgld default"] and report["meta"]["text_encoder_offload"]
    for row in rows:  # 3 steps: 2 guidance-distilled forwards
        assert row["dit_forwards"] == 2 and row["text_encode_s"] > 0 and row["video_decode_s"] > 0, row
        assert row["audio_decode_s"] > 0, row
    assert rows[1]["extra"]["max_diff_vs_diffusers"] == {"frames": 0, "psnr_db": float("inf"), "waveform": 0.0}
    assert out.with_suffix(".md").read_text().startswith("| pipeline |")
