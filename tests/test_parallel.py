"""Multi-process runs on CPU (2 gloo processes): each parallel layout equals the single-process output.

The layout cases run on one launch of 2 ranks through torchrun's elastic launcher (tests/support/one_group.py:
each run loads and generates as ``sgl-diffusion generate --num-gpus 2 ...`` does on its ranks, with its own mesh);
each case compares its rank 0's frames. The CLI's own launch is tested below (``test_cli_num_gpus_2...``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import read_mp4, run_cli

TOLERANCE = 2  # /255, per pixel


BASE = dict(prompt="a red fox running through fresh snow", seed=3, num_inference_steps=2)


def generate(**options):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    run = run_config_from_options({**BASE, "save_output": False, "return_frames": True, **options})
    return run_generation(run).frames.astype(int)


WAN = dict(model_path="tiny-wan-t2v", height=64, width=64, num_frames=9)
# 3 latent frames x 3 x 3 patches = 27 tokens: they do not split evenly over 2 ranks.
WAN_ODD = dict(model_path="tiny-wan-t2v", height=48, width=48, num_frames=9)
# Tiled decode with 32-pixel tiles: 64x80 is 3x4 tiles, for VAE sp to split across ranks.
WAN_TILED = dict(model_path="tiny-wan-t2v", height=64, width=80, num_frames=9, vae_tiling=True,
                 vae_config={"tile_sample_min_height": 32, "tile_sample_min_width": 32})


@pytest.fixture(scope="module")
def single(sgld_home):
    cache = {}

    def get(key, options):
        if key not in cache:
            cache[key] = generate(**options)
        return cache[key]

    return get


LAYOUTS = [
    ("wan-ulysses2-tp2", WAN, dict(num_gpus=2, ulysses_degree=2, tp_size=2)),
    ("wan-cfg2", WAN, dict(num_gpus=2, enable_cfg_parallel=True)),
    ("wan-odd-ulysses2", WAN_ODD, dict(num_gpus=2, ulysses_degree=2)),
    ("wan-odd-ring2", WAN_ODD, dict(num_gpus=2, ring_degree=2)),
    ("wan-vae-sp2", WAN_TILED, dict(num_gpus=2, ulysses_degree=2, vae_sp=True)),
    ("flux-ring2-tp2", dict(model_path="tiny-flux", height=64, width=64), dict(num_gpus=2, ring_degree=2, tp_size=2)),
    ("qwen-cfg2", dict(model_path="tiny-qwen-image", height=64, width=48), dict(num_gpus=2, enable_cfg_parallel=True)),
    ("qwen-edit-ulysses2", dict(model_path="tiny-qwen-image-edit", height=32, width=32, image_path="INPUT"),
     dict(num_gpus=2, ulysses_degree=2)),
    # FLUX.2 through diffusers' plan for its DiT; [dev] with a reference image (its tokens are sharded too).
    ("flux2-klein-ulysses2", dict(model_path="tiny-flux2-klein", height=64, width=48), dict(num_gpus=2, ulysses_degree=2)),
    # HunyuanVideo-1.5: each rank's branch has its own prompt length (no padding, no mask).
    ("hunyuan15-cfg2", dict(model_path="tiny-hunyuan15", height=64, width=48, num_frames=9),
     dict(num_gpus=2, enable_cfg_parallel=True)),
    ("flux2-dev-ring2-reference", dict(model_path="tiny-flux2", height=64, width=48, image_path="INPUT64"),
     dict(num_gpus=2, ring_degree=2)),
]
# FLUX Ulysses and Qwen-Image ring were here too; Ulysses and ring are each covered by other
# cases (and by bench/parallel_equality.py on GPUs), so CI keeps one case per family and mode.


def _with_inputs(model: dict, input_png, folder) -> dict:
    """``model`` with INPUT as the test image, and INPUT64 as a 96x80 copy (FLUX.2 takes references of 64 px and more)."""
    if "INPUT64" in model.values():
        from PIL import Image

        path = folder / "reference.png"
        Image.open(input_png).resize((96, 80)).save(path)
        model = {k: str(path) if v == "INPUT64" else v for k, v in model.items()}
    return {k: str(input_png) if v == "INPUT" else v for k, v in model.items()}


@pytest.fixture(scope="module")
def layout_frames(sgld_home, input_png, tmp_path_factory) -> dict:
    """Rank 0's frames of every layout case, generated on one launch of 2 ranks."""
    from tests.support.one_group import generate_on_one_group

    folder = tmp_path_factory.mktemp("reference")
    options = [{**BASE, **_with_inputs(model, input_png, folder), **layout} for _, model, layout in LAYOUTS]
    results = generate_on_one_group(options)
    return {name: result.frames.astype(int) for (name, _, _), result in zip(LAYOUTS, results)}


@pytest.mark.parametrize("name,model,layout", LAYOUTS, ids=[case[0] for case in LAYOUTS])
def test_parallel_layout_equals_single_process(name, model, layout, layout_frames, single, input_png, tmp_path_factory):
    model = _with_inputs(model, input_png, tmp_path_factory.mktemp("reference"))
    reference = single(repr(sorted(model.items())), model)
    frames = layout_frames[name]
    assert frames.shape == reference.shape
    diff = np.abs(frames - reference).max()
    assert diff <= TOLERANCE, f"{name}: max per-pixel difference {diff}/255"


COMPILED_SP = {"flux-ulysses2": ("tiny-flux", dict(ulysses_degree=2)), "wan-ring2": ("tiny-wan-t2v", dict(ring_degree=2))}


@pytest.fixture(scope="module")
def compiled_sp_results(sgld_home) -> dict:
    """Each compiled sequence-parallel case's rank-0 results, both run on one launch of 2 ranks."""
    from sgld.run_config import run_config_from_options
    from tests.support.compiled_parallel import uneven_then_even
    from tests.support.one_group import each_on_one_group

    runs = [run_config_from_options({"model_path": model, "prompt": "a red fox running through fresh snow", "seed": 3,
                                     "num_inference_steps": 2, "save_output": False, "num_gpus": 2,
                                     "enable_torch_compile": True, **layout})
            for model, layout in COMPILED_SP.values()]
    return dict(zip(COMPILED_SP, each_on_one_group(runs, uneven_then_even)))


@pytest.mark.parametrize("case", COMPILED_SP)
def test_compiled_sequence_parallel_serves_uneven_and_even_sizes(case, compiled_sp_results, single):
    """Compile with sequence parallelism: an even size runs the compiled plain split, an uneven one the
    "anything" split uncompiled (dynamo cannot trace it), and the compiler's stance is restored after it.
    FLUX's split hooks sit outside the compiled blocks, Wan's on its first block, inside them."""
    from tests.support.compiled_parallel import SIZES, size_options

    model, layout = COMPILED_SP[case]
    result = compiled_sp_results[case]
    assert result["stance"] == "default" and result["graphs"] > 0
    for size in SIZES[model]:
        options = dict(model_path=model, **size_options(*size))
        reference = single(repr(sorted(options.items())), options)
        diff = np.abs(result["frames"][size].astype(int) - reference).max()
        assert diff <= TOLERANCE, f"{model} {layout} {size}: max per-pixel difference {diff}/255"


def test_a_failing_rank_ends_the_group_with_its_message(sgld_home):
    from sgld.errors import UserError
    from sgld.parallel.launch import launch
    from sgld.run_config import run_config_from_options
    from tests.support.faults import fail_on_rank_one

    run = run_config_from_options({**WAN, "prompt": "a fox", "num_inference_steps": 2, "save_output": False,
                                   "num_gpus": 2, "ulysses_degree": 2})
    start = time.perf_counter()
    with pytest.raises(UserError, match="rank 1 failed: .*injected test failure on rank 1"):
        launch(run, fail_on_rank_one)
    assert time.perf_counter() - start < 120  # rank 0 does not wait out the collective timeout


def test_hydra_usp2_writes_one_output(tmp_path):
    proc = run_cli("sgld.generate", "model=tiny_wan", "parallel=usp2", "sampling.prompt=a cat", "sampling.seed=4",
                   "sampling.num_inference_steps=2", f"output.path={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    outputs = list(tmp_path.glob("**/*.mp4"))
    assert [p.name for p in outputs] == ["a_cat_seed4.mp4"]
    _, frames = read_mp4(outputs[0])
    assert len(frames) == 9


def test_cli_num_gpus_2_and_bad_layouts(tmp_path):
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a cat", "--num-gpus", "2",
                   "--ring-degree", "2", "--num-inference-steps", "2", "--output-path", str(tmp_path),
                   "--output-file-name", "cat.mp4")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["cat.mp4"]
    bad = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a cat", "--num-gpus", "2",
                  "--ulysses-degree", "2", "--tp-size", "2", "--text-encoder-cpu-offload", timeout=60)
    assert bad.returncode == 2 and "layer-wise offload with prefetch is faster" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_joins_a_group_torchrun_started(tmp_path):
    """Under torchrun sgld joins instead of launching: one output, written by rank 0."""
    proc = run_cli("torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "sgld.generate",
                   "model=tiny_wan", "parallel=usp2", "sampling.prompt=a cat", "sampling.num_inference_steps=2",
                   f"output.path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.glob("*.mp4")] == ["a_cat_seed1024.mp4"]


def test_ring_attention_takes_the_first_lse_kernel_that_runs():
    """The CUDA path's choice (cuDNN, then flash, then memory-efficient), with stand-in kernels."""
    from sgld.parallel.sequence import run_first_working

    calls = []

    def failing(x):
        calls.append("cudnn")
        raise RuntimeError("not supported on this GPU")

    def working(x):
        calls.append("flash")
        return x + 1

    def never(x):
        calls.append("efficient")
        return x

    chosen = {}
    assert run_first_working((failing, working, never), chosen, "bf16", 1) == 2
    assert run_first_working((failing, working, never), chosen, "bf16", 5) == 6  # remembered: no retry
    assert calls == ["cudnn", "flash", "flash"] and chosen == {"bf16": working}
    with pytest.raises(RuntimeError, match="no attention kernel"):
        run_first_working((failing,), {}, "fp8", 1)
