"""HunyuanVideo / FastHunyuan: parity with diffusers, the seed's config files, VAE sp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import read_mp4

DATA = Path(__file__).resolve().parent / "data"
TOLERANCE = 2 / 255
SETTINGS = dict(seed=3, num_inference_steps=4, guidance_scale=6.0, height=64, width=64, num_frames=9)


@pytest.fixture(scope="module")
def generator(sgld_home):
    from sgld import DiffGenerator

    return DiffGenerator.from_pretrained("tiny-hunyuan")


def frames(generator, prompt="a red fox running", **overrides):
    return generator.generate(prompt, return_frames=True, save_output=False, **{**SETTINGS, **overrides}).frames


def test_frames_match_diffusers(generator):
    from diffusers import HunyuanVideoPipeline

    from sgld.model_builders.tiny import materialize_tiny

    pipe = HunyuanVideoPipeline.from_pretrained(materialize_tiny("tiny-hunyuan"))
    pipe.set_progress_bar_config(disable=True)
    s = SETTINGS
    ref = pipe(prompt="a red fox running", height=s["height"], width=s["width"], num_frames=s["num_frames"],
               num_inference_steps=s["num_inference_steps"], guidance_scale=s["guidance_scale"],
               generator=torch.Generator().manual_seed(s["seed"]), output_type="np").frames[0]
    ours = frames(generator)
    assert ours.shape == (9, 64, 64, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.float64) / 255 - ref).max()
    assert diff <= TOLERANCE, f"max per-pixel difference {diff * 255:.2f}/255"


def test_text_encoding_matches_encode_prompt(generator):
    from diffusers import HunyuanVideoPipeline

    from sgld.model_builders.tiny import materialize_tiny

    pipe = HunyuanVideoPipeline.from_pretrained(materialize_tiny("tiny-hunyuan"))
    hidden, pooled, mask = pipe.encode_prompt("a red fox &amp; a cat", device="cpu")
    from sgld.stages.hunyuan_text import HunyuanTextEncodingStage

    stage = generator.pipeline.stage(HunyuanTextEncodingStage)
    ours, our_mask, our_pooled = stage.encode(["a red fox &amp; a cat"])
    assert ours.shape == (1, 256, 32)  # the template's 95 tokens are cropped, 256 prompt tokens stay
    torch.testing.assert_close(ours, hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_mask, mask.float())
    torch.testing.assert_close(our_pooled, pooled, rtol=1e-5, atol=1e-5)


def test_prompt_seed_and_guidance_each_change_the_video(generator):
    base = frames(generator).astype(np.float64)
    for name, other in (("prompt", frames(generator, "a blue bird flying over the sea")),
                        ("seed", frames(generator, seed=4)), ("guidance", frames(generator, guidance_scale=1.0))):
        assert np.abs(base - other).max() >= 20, name


def _seed_argv(config: Path, out: Path) -> list[str]:
    # The seed's file runs 2 GPUs with sequence parallelism at 720p; one CPU process, small sizes here.
    return ["generate", "--config", str(config), "--num-gpus", "1", "--sp-size", "1", "--height", "32", "--width", "32",
            "--num-frames", "5", "--num-inference-steps", "2", "--output-path", str(out)]


@pytest.mark.parametrize("name", ["seed_fasthunyuan.yaml", "seed_fasthunyuan.json"])
def test_the_seeds_config_file_runs_and_every_key_is_honoured(name, tmp_path, sgld_home, monkeypatch):
    from sgld.cli import build_parser, collect_options, main
    from sgld.run_config import run_config_from_options

    config = DATA / name
    argv = _seed_argv(config, tmp_path / "out")
    run = run_config_from_options(collect_options(build_parser().parse_args(argv)))
    # From the file.
    assert run.model.name == "tiny_hunyuan" and run.model.path == "tiny-hunyuan"
    assert run.sampling.prompt == "A beautiful woman in a red dress walking down a street"
    assert (run.sampling.seed, run.sampling.fps, run.parallel.tp_size) == (1024, 24, 1)
    assert (run.model.precision, run.vae.precision, list(run.model.text_encoder_precisions)) == ("bf16", "fp16", ["fp16", "fp16"])
    assert run.vae.tiling and run.vae.sp and not run.vae.load_encoder and run.vae.load_decoder
    assert (run.vae.tile_sample_min_height, run.vae.tile_sample_min_width) == (256, 256)
    assert run.model.mask_strategy_file_path is None and not run.model.enable_torch_compile
    # Flags win over the file.
    assert (run.parallel.num_gpus, run.parallel.sp_size) == (1, 1)
    assert (run.sampling.height, run.sampling.width, run.sampling.num_frames, run.sampling.num_inference_steps) == (32, 32, 5, 2)
    assert run.output.path == str(tmp_path / "out")
    # The file's own values without the flags (what a 2-GPU run would use).
    data = json.loads(config.read_text()) if name.endswith(".json") else None
    if data is not None:
        assert (data["num_gpus"], data["sp_size"], data["height"], data["num_frames"]) == (2, 2, 720, 45)

    # The CLI's own entry point, in this process (the same code path as the console script).
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    [video] = (tmp_path / "out").glob("*.mp4")
    meta, decoded = read_mp4(video)
    assert meta["size"] == (32, 32) and len(decoded) == 5 and meta["fps"] == 24
    assert not (tmp_path / "outputs").exists()  # output_path from the file was overridden


def test_load_encoder_false_drops_the_vae_encoder(sgld_home):
    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained("tiny-hunyuan", vae_config={"load_encoder": False})
    assert gen.pipeline.components["vae"].encoder is None


def _decode_rank(rank: int, port: int, latents: torch.Tensor, folder: str, out: str) -> None:
    import torch.distributed as dist
    from diffusers import AutoencoderKLHunyuanVideo

    from sgld.models.vae_setup import enable_vae_tiling
    from sgld.parallel.state import ParallelState
    from sgld.parallel.vae import round_robin_decode

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        vae = AutoencoderKLHunyuanVideo.from_pretrained(folder, subfolder="vae")
        enable_vae_tiling(vae, 32, 32)
        state = ParallelState(world_size=2, rank=rank)
        video = round_robin_decode(vae, latents, state)
        if rank == 0:
            torch.save(video, out)
        else:
            assert video is None
    finally:
        dist.destroy_process_group()


def test_vae_sp_splits_the_tiled_decode_over_two_ranks(tmp_path, sgld_home):
    """Two gloo ranks share the decoder calls of a tiled decode (2x3 tiles, 2 temporal chunks)."""
    import torch.multiprocessing as mp
    from diffusers import AutoencoderKLHunyuanVideo

    from sgld.models.vae_setup import enable_vae_tiling
    from sgld.model_builders.tiny import materialize_tiny
    from tests.server.conftest import free_port

    folder = str(materialize_tiny("tiny-hunyuan"))
    latents = torch.randn(1, 4, 6, 6, 8, generator=torch.Generator().manual_seed(0))
    vae = AutoencoderKLHunyuanVideo.from_pretrained(folder, subfolder="vae")
    enable_vae_tiling(vae, 32, 32)
    with torch.no_grad():
        single = vae.decode(latents, return_dict=False)[0]
    out = tmp_path / "video.pt"
    mp.spawn(_decode_rank, args=(free_port(), latents, folder, str(out)), nprocs=2, join=True)
    split = torch.load(out)
    assert split.shape == single.shape == (1, 3, 21, 48, 64)
    torch.testing.assert_close(split, single, rtol=1e-5, atol=1e-5)
