"""LTX-2 (video with sound) on the tiny model: sgld equals diffusers' pipelines on the same folder and seed
(one-stage T2AV and I2AV, and the two-stage recipe run by hand), prompt, seed and guidance move both the video
and the sound, batched samples equal their solo runs, and bad input is refused before weights load.

fp32 on one torch thread (``tests/test_tiny_ltx2.py`` says why).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import read_streams

FRAMES_TOLERANCE = 2  # of 255, per pixel
WAVE_TOLERANCE = 1e-4  # absolute, fp32
MIN_CHANGE = 20  # of 255: what prompt, seed and guidance must move the frames by
# The peak waveform change each of prompt, seed and guidance made here (0.16, 0.51 and 0.35 on the reference's
# tiny runs; sgld's are printed by -s): a third of the smallest is asked for, so no change fails.
MIN_WAVE_CHANGE = 0.05
PROMPT, NEGATIVE = "a red fox running through snow", "blurry"
SIZE, FRAMES, FPS, STEPS, SEED = 64, 9, 24, 3, 7
# The tiny conf's guidance (tiny_ltx2.yaml): the reference's defaults, STG at the tiny DiT's last block.
GUIDANCE = dict(guidance_scale=3.0, audio_guidance_scale=7.0, stg_scale=1.0, audio_stg_scale=1.0,
                modality_scale=3.0, audio_modality_scale=3.0, guidance_rescale=0.7, audio_guidance_rescale=0.7,
                spatio_temporal_guidance_blocks=[1])
# Stage 2 of the recipe, explicit in both runs: diffusers 0.42.1's defaults would keep audio CFG (7.0), STG and
# modality isolation on in stage 2, which its documentation example predates; Lightricks' stage 2 is unguided.
STAGE_2_GUIDANCE = dict(guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
                        modality_scale=1.0, audio_modality_scale=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(sgld_home):
    from sgld.model_builders.tiny import materialize_tiny

    return materialize_tiny("tiny-ltx2")


@pytest.fixture(scope="module")
def ltx2(generators):
    return generators("tiny-ltx2")


@pytest.fixture(scope="module")
def first_frame(tmp_path_factory):
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE]
    path = tmp_path_factory.mktemp("ltx2") / "first.png"
    Image.fromarray(np.stack((x * 4, y * 4, 255 - x * 4), axis=-1).astype(np.uint8)).save(path)
    return path


def ours(generator, **options):
    """(uint8 frames, float32 waveform (channels, samples)) of one sgld generation."""
    settings = dict(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, height=SIZE, width=SIZE, num_frames=FRAMES,
                    fps=FPS, num_inference_steps=STEPS, return_frames=True, save_output=False)
    result = generator.generate(**{**settings, **options})
    return result.frames, result.audio


def reference(folder, image=None, two_stage=False, **changes):
    """(uint8 frames, waveform) of diffusers' pipeline on ``folder``; ``two_stage``: the documented recipe by hand
    (one generator through both stages, as its distilled example carries it)."""
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline
    from PIL import Image

    cls = LTX2ImageToVideoPipeline if image is not None else LTX2Pipeline
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(changes.pop("seed", SEED))
    args = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
                num_inference_steps=STEPS, generator=generator, return_dict=False, **GUIDANCE)
    if image is not None:
        args["image"] = Image.open(image)
    args.update(changes)
    if two_stage:
        video, audio = _two_stage(pipe, folder, args)
    else:
        video, audio = pipe(**args, output_type="np")
    return (video[0] * 255).round().astype(np.uint8), audio[0].float().numpy()


def _two_stage(pipe, folder, args):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

    from sgld.model_builders.tiny_ltx2 import DISTILLED_LORA, UPSAMPLER_SUBFOLDER

    height, width = args.pop("height"), args.pop("width")
    video_latents, audio_latents = pipe(**args, height=height // 2, width=width // 2, output_type="latent")
    upsampler = LTX2LatentUpsamplerModel.from_pretrained(folder, subfolder=UPSAMPLER_SUBFOLDER)
    upsampled = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
        latents=video_latents, output_type="latent", return_dict=False)[0]
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=False,
                                                                 shift_terminal=None)
    pipe.load_lora_weights(folder, adapter_name="stage_2_distilled", weight_name=DISTILLED_LORA)
    pipe.set_adapters("stage_2_distilled", 1.0)
    stage_2 = {**args, **STAGE_2_GUIDANCE, "num_inference_steps": len(STAGE_2_DISTILLED_SIGMA_VALUES)}
    return pipe(**stage_2, height=height, width=width, latents=upsampled, audio_latents=audio_latents,
                noise_scale=STAGE_2_DISTILLED_SIGMA_VALUES[0], sigmas=STAGE_2_DISTILLED_SIGMA_VALUES, output_type="np")


def tiny_settings_on(folder):
    """A DiffGenerator of ``folder`` with tiny-ltx2's settings (fp32, its guidance), not the released model's."""
    from sgld import DiffGenerator
    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": "tiny-ltx2"})
    run.model.path = str(folder)
    return DiffGenerator.from_run_config(run)


def differences(a, b) -> tuple[int, float]:
    """(max per-pixel frame difference of 255, max absolute waveform difference)."""
    assert a[0].shape == b[0].shape and a[1].shape == b[1].shape, (a[0].shape, b[0].shape, a[1].shape, b[1].shape)
    return int(np.abs(a[0].astype(int) - b[0].astype(int)).max()), float(np.abs(a[1] - b[1]).max())


@pytest.mark.parametrize("workflow", ["t2av", "i2av", "two_stage_t2av", "two_stage_i2av"])
def test_sgld_equals_diffusers(workflow, ltx2, folder, first_frame):
    image = first_frame if "i2av" in workflow else None
    two_stage = workflow.startswith("two_stage")
    size = 2 * SIZE if two_stage else SIZE
    options = dict(height=size, width=size, two_stage=two_stage, **({"image_path": str(image)} if image else {}))
    mine = ours(ltx2, **options)
    frames, wave = differences(mine, reference(folder, image, two_stage, height=size, width=size))
    print(f"{workflow}: frames {frames}/255, waveform {wave:.2e}")
    assert mine[0].shape == (FRAMES, size, size, 3) and mine[1].dtype == np.float32 and mine[1].shape[0] == 2
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


@pytest.fixture(scope="module")
def base(ltx2):
    return ours(ltx2)


@pytest.mark.parametrize("change", [dict(prompt="a blue robot dancing on stage"), dict(seed=SEED + 1),
                                   dict(guidance_scale=1.5, audio_guidance_scale=2.0)],
                         ids=["prompt", "seed", "guidance"])
def test_prompt_seed_and_guidance_move_frames_and_sound(change, ltx2, base):
    frames, wave = differences(base, ours(ltx2, **change))
    print(f"{next(iter(change))}: frames {frames}/255, waveform {wave:.3f}")
    assert frames >= MIN_CHANGE and wave >= MIN_WAVE_CHANGE


def test_the_audio_guidance_scale_moves_the_sound(ltx2, base):
    _, wave = differences(base, ours(ltx2, audio_guidance_scale=2.0))
    assert wave >= MIN_WAVE_CHANGE


def test_stg_runs_where_the_dit_perturbs_and_equals_diffusers(folder, tmp_path_factory):
    """LTX-2.0's DiT has no perturbed attention, so its STG forward is skipped; a DiT built with it (LTX-2.3's
    ``perturbed_attn``) runs it, and the guidance still equals the reference's."""
    from sgld.pipelines.ltx2 import Ltx2Pipeline
    from sgld.stages.ltx2_denoising import Ltx2DenoisingStage

    perturbed = tmp_path_factory.mktemp("ltx2-perturbed") / "model"
    shutil.copytree(folder, perturbed)
    config_file = perturbed / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "perturbed_attn": True}))
    generator = tiny_settings_on(perturbed)
    assert isinstance(generator.pipeline, Ltx2Pipeline)
    assert generator.pipeline.stage(Ltx2DenoisingStage).stg_runs
    frames, wave = differences(ours(generator), reference(perturbed))
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE
    # STG changes the result here (it is no zero term), so the test above would see it left out.
    off = ours(generator, two_stage=False)
    generator.pipeline.stage(Ltx2DenoisingStage).stg_runs = False
    try:
        assert differences(off, ours(generator))[1] > 0
    finally:
        generator.pipeline.stage(Ltx2DenoisingStage).stg_runs = True


def test_stg_is_skipped_on_a_dit_without_perturbed_attention(ltx2):
    from sgld.stages.ltx2_denoising import Ltx2DenoisingStage

    stage = ltx2.pipeline.stage(Ltx2DenoisingStage)
    assert stage.terms.stg_on and not stage.stg_runs and stage._extras() == ["modality"]


def test_each_sample_of_a_batch_equals_its_solo_run(ltx2):
    from sgld.api import BatchItem

    items = [dict(prompt=PROMPT, seed=1, guidance_scale=3.0), dict(prompt="a blue robot dancing", seed=2,
                                                                   guidance_scale=4.0, audio_guidance_scale=5.0),
             dict(prompt="rain on a tin roof", seed=3)]
    common = dict(negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                  return_frames=True, save_output=False)
    results = ltx2.generate_batch([BatchItem({**common, **item}) for item in items])
    for item, result in zip(items, results):
        assert not isinstance(result, Exception), result
        frames, wave = differences((result.frames, result.audio), ours(ltx2, **item))
        assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE, (item, frames, wave)


def test_batch_keys_hold_what_fixes_the_sound(ltx2):
    from sgld.request import Request

    spec = ltx2.pipeline.spec
    key = lambda **o: spec.batch_key(Request.from_sampling(ltx2.check(prompt="x", **o).sampling))  # noqa: E731
    assert key() == key(seed=9, guidance_scale=4.0)
    assert key() != key(fps=12) and key() != key(num_frames=17) and key() != key(two_stage=True, height=128, width=128)


def test_two_stage_progress_counts_both_stages(ltx2):
    seen = []
    ltx2.generate(PROMPT, height=2 * SIZE, width=2 * SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                  two_stage=True, save_output=False, step_callback=lambda done, total: seen.append((done, total)))
    assert seen == [(i, STEPS + 3) for i in range(STEPS + 4)]


def test_the_api_returns_the_sound_beside_the_frames(ltx2, tmp_path):
    result = ltx2.generate(PROMPT, num_inference_steps=2, return_frames=True, output_path=str(tmp_path),
                           output_file_name="fox.mp4")
    rate = result.sample_rate
    assert (result.sample_rate, result.audio_channels, result.audio.dtype) == (24000, 2, np.float32)
    # 25 audio latents a second, 4 mel frames each less 3 (causal), 240 samples a mel frame.
    assert result.audio.shape == (2, (4 * round(FRAMES / FPS * 25) - 3) * 240)
    assert abs(result.audio.shape[1] / rate - FRAMES / FPS) < 2 / FPS
    streams = read_streams(result.path)
    assert streams["audio"]["rate"] == rate and streams["audio"]["channels"] == 2
    silent = ltx2.generate(PROMPT, num_inference_steps=2, output_path=str(tmp_path), return_frames=False)
    assert silent.audio is None and silent.sample_rate == rate
    # The model says its sound's rate loaded and from its folder alone (what a multi-rank server reads).
    from sgld.models.folder_model import FolderModel

    assert ltx2.pipeline.sample_rate == FolderModel.of("tiny-ltx2").sample_rate == rate
    assert FolderModel.of("tiny-wan-t2v").sample_rate is None


@pytest.mark.parametrize("audio", ["mux", "wav", "none"])
def test_the_cli_writes_the_sound_as_output_audio_says(audio, tmp_path):
    import wave

    from sgld.cli import main

    code = main(["generate", "--model-path", "tiny-ltx2", "--prompt", PROMPT, "--num-inference-steps", "2",
                 "--audio", audio, "--output-file-path", str(tmp_path / "fox.mp4")])
    assert code == 0
    streams = read_streams(tmp_path / "fox.mp4")
    assert streams["video"]["frames"] == FRAMES
    assert ("audio" in streams) == (audio != "none")
    if audio != "none":
        assert streams["audio"]["codec"] == "aac" and streams["audio"]["channels"] == 2
        # The same length as the video, to the frame (AAC pads its last block: within one frame).
        assert abs(streams["audio"]["seconds"] - streams["video"]["seconds"]) <= 1 / FPS
    assert (tmp_path / "fox.wav").is_file() == (audio == "wav")
    if audio == "wav":
        with wave.open(str(tmp_path / "fox.wav")) as wav:
            assert (wav.getnchannels(), wav.getframerate()) == (2, 24000)


def test_a_prompt_set_writes_videos_with_sound(tmp_path):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_prompt_set

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox barks\nrain on a roof\n")
    run = run_config_from_options({"model_path": "tiny-ltx2", "prompt_file": str(prompts), "num_inference_steps": 2,
                                   "batch_size": 2, "output_path": str(tmp_path / "out")})
    summary = run_prompt_set(run)
    assert summary["done"] == 2
    for video in sorted((tmp_path / "out").glob("*.mp4")):
        assert "audio" in read_streams(video), video


def _refused(args, monkeypatch, capsys) -> str:
    """The CLI's error for ``args``, checked to come before any weights load."""
    from sgld.cli import main
    from sgld.models import components

    def no_load(*_, **__):
        raise AssertionError("weights loaded before the request was refused")

    monkeypatch.setattr(components, "load_components", no_load)
    code = main(["generate", "--prompt", "a fox", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args,message", [
    (["--model-path", "tiny-wan-t2v", "--audio-guidance-scale", "5"], "audio_guidance_scale: wan_t2v models make no sound"),
    (["--model-path", "tiny-wan-t2v", "--audio", "wav"], "audio=wav: wan_t2v models make no sound"),
    (["--model-path", "tiny-flux", "--audio", "wav"], "audio=wav: flux models make no sound"),
    (["--model-path", "tiny-wan-t2v", "--two-stage"], "two_stage: wan_t2v models have no two-stage recipe"),
    (["--model-path", "tiny-ltx2", "--height", "80"], "height=80 must be a multiple of 32 for this model; nearest valid: 64 or 96"),
    (["--model-path", "tiny-ltx2", "--num-frames", "12"], "num_frames=12 must be 8k+1 for this model; nearest valid: 9 or 17"),
    (["--model-path", "tiny-ltx2", "--two-stage", "--height", "96"],
     "height=96 must be a multiple of 64 for this model; nearest valid: 64 or 128"),
    (["--model-path", "tiny-ltx2", "--flow-shift", "3"], "flow_shift: this model's shift follows"),
])
def test_bad_input_is_refused_before_weights_load(args, message, monkeypatch, capsys, folder):
    assert message in _refused(args, monkeypatch, capsys)


def test_two_stage_without_the_upsampler_folder_is_refused_before_loading(folder, tmp_path, monkeypatch, capsys):
    one_stage = tmp_path / "ltx2-one-stage"
    shutil.copytree(folder, one_stage, ignore=shutil.ignore_patterns("latent_upsampler"))
    err = _refused(["--model-path", str(one_stage), "--two-stage", "--height", "128", "--width", "128"],
                   monkeypatch, capsys)
    assert "two_stage: this model folder lacks latent_upsampler/ (the latent upsampler)" in err
    monkeypatch.undo()  # one-stage requests still run on it
    generator = tiny_settings_on(one_stage)
    assert ours(generator, num_inference_steps=2)[1].shape[0] == 2


def _launch(**options):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    base = dict(model_path="tiny-ltx2", prompt=PROMPT, seed=3, num_inference_steps=2, save_output=False,
                return_frames=True)
    result = run_generation(run_config_from_options({**base, **options}))
    return result.frames, result.audio


PARALLEL_CASES = {
    "cfg2": (dict(enable_cfg_parallel=True), {}),
    # diffusers' own plan fails on split RoPE; sgld's (sgld/parallel/ltx2_plan.py) splits the tables, the
    # cross-modal table and image-to-video's per-token timesteps: 3 x 3 x 1 = 9 tokens, uneven over 2 ranks.
    "ulysses2-i2av-uneven": (dict(ulysses_degree=2), dict(image_path="FIRST", height=96, width=96, num_frames=1)),
    "ring2-two-stage": (dict(ring_degree=2), dict(two_stage=True, height=128, width=128)),
}


def _request_options(name: str, first_frame) -> dict:
    return {k: str(first_frame) if v == "FIRST" else v for k, v in PARALLEL_CASES[name][1].items()}


@pytest.fixture(scope="module")
def parallel_runs(first_frame) -> dict:
    """Each case's frames and sound on 2 gloo ranks, all on one launch."""
    from tests.support.one_group import generate_on_one_group

    base = dict(model_path="tiny-ltx2", prompt=PROMPT, seed=3, num_inference_steps=2, num_gpus=2)
    options = [{**base, **layout, **_request_options(name, first_frame)} for name, (layout, _) in PARALLEL_CASES.items()]
    return dict(zip(PARALLEL_CASES, generate_on_one_group(options)))


@pytest.mark.parametrize("case", PARALLEL_CASES)
def test_parallel_layouts_equal_one_process(case, parallel_runs, first_frame):
    """2 gloo ranks: CFG parallel (the extra forwards alternate between the cfg ranks), Ulysses and ring."""
    frames, wave = differences(parallel_runs[case], _launch(**_request_options(case, first_frame)))
    assert frames <= FRAMES_TOLERANCE and wave <= WAVE_TOLERANCE


def test_ulysses_must_divide_the_audio_heads_too(folder, tmp_path, monkeypatch, capsys):
    odd = tmp_path / "ltx2-odd-audio-heads"
    shutil.copytree(folder, odd)
    config_file = odd / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "audio_num_attention_heads": 3,
                                       "audio_attention_head_dim": 4}))
    err = _refused(["--model-path", str(odd), "--num-gpus", "2", "--ulysses-degree", "2"], monkeypatch, capsys)
    assert "ulysses_degree=2 must divide the 3 attention heads" in err


def test_layerwise_offload_leaves_video_and_sound_unchanged(ltx2):
    from sgld import DiffGenerator

    offloaded = DiffGenerator.from_pretrained("tiny-ltx2", dit_layerwise_offload=True)
    assert differences(ours(ltx2, num_inference_steps=2), ours(offloaded, num_inference_steps=2)) == (0, 0.0)


def test_the_ltx2_bench_runs_tiny_on_the_cpu(tmp_path):
    """bench/ltx2.py --tiny: the GPU benchmark's code path (diffusers built from sgld's components, the two-stage
    recipe by hand, sgld with its defaults) on the CPU, sgld equal to its reference in both workflows."""
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "ltx2.json"
    # --text-encoder-offload: the reference given embeddings computed with Gemma brought in (the H100 two-stage run).
    proc = subprocess.run([sys.executable, "bench/ltx2.py", "--tiny", "--steps", "2", "--text-encoder-offload",
                           "--pin-cpu-memory", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                           "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["workflow"], r["name"]) for r in rows] == [("one_stage", "diffusers"), ("one_stage", "sgld default"),
                                                          ("two_stage", "diffusers"), ("two_stage", "sgld default")]
    for row in rows:
        assert row["dit_forward_ms"] > 0 and row["audio_decode_s"] > 0 and row["mux_s"] > 0, row
    for row in rows[1::2]:
        diff = row["extra"]["max_diff_vs_diffusers"]
        assert diff["frames"] <= FRAMES_TOLERANCE and diff["waveform"] <= WAVE_TOLERANCE, row
    # LTX-2.0 has no perturbed attention: sgld skips the STG forward diffusers runs (3 forwards a step, not 4).
    assert rows[1]["dit_sample_branches"] < rows[0]["dit_sample_branches"]
    assert (out.with_suffix(".md")).read_text().startswith("| workflow |")


def test_a_random_folder_runs_two_stage_with_its_upsampler_and_lora_made_at_load(folder, tmp_path):
    """The random: path (benchmarks) on the tiny model's configs: no weights in the folder, the upsampler built
    on the device and the stage-2 LoRA written from its stand-in when the model loads."""
    from sgld.model_builders.random_weights import RANDOM_LORA_SUFFIX, RANDOM_MARKER
    from sgld.model_builders.tiny_ltx2 import DISTILLED_LORA

    configs = tmp_path / "random-ltx2"
    shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors"))
    (configs / RANDOM_MARKER).write_text(json.dumps({"repo_id": "tiny"}))
    stand_in = configs / (DISTILLED_LORA + RANDOM_LORA_SUFFIX)
    stand_in.write_text(json.dumps({"rank": 4, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}))
    generator = tiny_settings_on(configs)
    assert (configs / DISTILLED_LORA).is_file() and generator.pipeline.upsampler is not None
    frames, wave = ours(generator, two_stage=True, height=2 * SIZE, width=2 * SIZE, num_inference_steps=2)
    assert frames.shape == (FRAMES, 2 * SIZE, 2 * SIZE, 3) and wave.shape[0] == 2
