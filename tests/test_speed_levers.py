"""Speed levers on the tiny models (their logic; their speed is measured by bench/speed.py on a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sgld import DiffGenerator
from sgld.errors import UserError

SMALL = dict(height=32, width=32, num_frames=5, num_inference_steps=4, seed=5, save_output=False, return_frames=True)


def test_first_block_cache_is_exact_until_it_skips(tiny_wan_folder, tiny_wan_generator):
    lossless = tiny_wan_generator.generate("a red fox", **SMALL).frames
    never_skips = DiffGenerator.from_pretrained("tiny-wan-t2v", cache="first_block", cache_threshold=1e-9)
    transformer = never_skips.pipeline.components["transformer"]
    assert transformer.is_cache_enabled
    same = never_skips.generate("a red fox", **SMALL).frames
    assert np.array_equal(same, lossless)
    # The cache state is reset per request: a second identical request gives the identical output.
    assert np.array_equal(never_skips.generate("a red fox", **SMALL).frames, same)
    skips = DiffGenerator.from_pretrained("tiny-wan-t2v", cache="first_block", cache_threshold=0.99)
    assert not np.array_equal(skips.generate("a red fox", **SMALL).frames, lossless)  # blocks were skipped


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-qwen-image", "tiny-hunyuan"])
def test_the_first_block_cache_runs_on_the_families_it_is_offered_for(model):
    """Wan is above; one image family of each DiT kind and HunyuanVideo (sgld.cache_support)."""
    gen = DiffGenerator.from_pretrained(model, cache="first_block", cache_threshold=0.99)
    video = dict(num_frames=5) if model == "tiny-hunyuan" else {}
    out = gen.generate("a red fox", height=32, width=32, num_inference_steps=3, seed=5, save_output=False,
                       return_frames=True, **video)
    assert gen.pipeline.components["transformer"].is_cache_enabled and out.frames.std() > 0


def test_the_first_block_cache_is_refused_before_loading_where_diffusers_cannot_run_it(monkeypatch):
    """FLUX.2's blocks return lists (diffusers' hook failed mid-generation with a TypeError); Z-Image's DiT has no
    cache hooks; LTX-2's and MiniMax-H3's blocks are not registered with it: each refused before weights load."""
    import sgld.models.components

    def no_load(*args, **kwargs):
        raise AssertionError("weights loaded before the cache was checked")

    monkeypatch.setattr(sgld.models.components, "load_components", no_load)
    for model, family in (("tiny-flux2-klein", "flux2_klein"), ("tiny-flux2", "flux2_dev"), ("tiny-z-image", "z_image"),
                          ("tiny-ltx2", "ltx2"), ("tiny-minimax-h3", "minimax_h3")):
        with pytest.raises(UserError, match=f"cache=first_block: diffusers' first-block cache does not run {family} "):
            DiffGenerator.from_pretrained(model, cache="first_block")


def test_hunyuan_video_compiles_past_the_sliding_tile_dispatch():
    """sgld's patch of HunyuanVideo's attention dispatch (sliding tiles) read a ContextVar, which Dynamo cannot
    trace: every compiled HunyuanVideo run failed. Compiled now, within a rounding of the eager run."""
    settings = dict(height=32, width=32, num_frames=5, num_inference_steps=2, seed=5, save_output=False,
                    return_frames=True)
    eager = DiffGenerator.from_pretrained("tiny-hunyuan").generate("a red fox", **settings).frames
    compiled = DiffGenerator.from_pretrained("tiny-hunyuan", enable_torch_compile=True).generate("a red fox", **settings)
    assert np.abs(compiled.frames.astype(int) - eager.astype(int)).max() <= 2


def test_cache_options_are_checked(tiny_wan_folder):
    with pytest.raises(UserError, match="cache.kind='sometimes' is not one of none, first_block, cache_dit, teacache"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="sometimes")
    with pytest.raises(UserError, match="cannot be combined"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="first_block", enable_torch_compile=True)
    with pytest.raises(UserError, match="cache.first_block_threshold must be between 0 and 1"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", cache="first_block", cache_threshold=2.0)


def test_cache_flags_map_to_config_keys():
    from sgld.cli import build_parser, collect_options
    from sgld.run_config import run_config_from_options

    args = build_parser().parse_args(["generate", "--model-path", "tiny-wan-t2v", "--cache", "first_block",
                                      "--cache-threshold", "0.1"])
    run = run_config_from_options(collect_options(args))
    assert (run.cache.kind, run.cache.first_block_threshold) == ("first_block", 0.1)


def test_speed_benchmark_runs_on_tiny_models(tiny_wan_folder, tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, "bench/speed.py", "--tiny", "--workloads", "wan13", "--steps", "2",
                           "--levers", "cache", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]["wan13"]
    assert [r["name"] for r in rows] == ["diffusers", "sgld default", "sgld +first-block cache 0.05"]
    assert rows[1]["extra"]["max_diff_vs_diffusers"] <= 2  # same weights, same noise: sgld equals its reference
    assert all(r["e2e_s"] > 0 and r["step_s"] > 0 for r in rows)
    assert "| wan13 | diffusers |" in out.with_suffix(".md").read_text()


def test_the_benchmark_counts_attention_flops_of_the_fa3_ops():
    """bench/speed.py's MFU: FA3's ops (diffusers', sgld's ring and FP8 ones) count as attention."""
    import importlib.util
    from pathlib import Path

    from torch.utils.flop_counter import FlopCounterMode

    spec = importlib.util.spec_from_file_location("bench_speed", Path(__file__).resolve().parents[1] / "bench/speed.py")
    speed = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = speed  # its dataclasses look their module up
    try:
        spec.loader.exec_module(speed)
    finally:
        del sys.modules["bench_speed"]
    speed.register_attention_flops()
    speed.register_attention_flops()  # once per op, however often a run counts
    q = torch.empty(2, 4096, 12, 128, device="meta", dtype=torch.bfloat16)  # (batch, tokens, heads, dim)
    scales = torch.empty(2, 12, device="meta")
    expected = 4 * 2 * 12 * 4096 * 4096 * 128
    for call in (lambda: torch.ops._diffusers_flash_attn_3._flash_attn_forward(q, q, q),
                 lambda: torch.ops.sgld.fa3_forward(q, q, q),
                 lambda: torch.ops.sgld.fa3_fp8_forward(q, q, q, scales, scales, scales)):
        with FlopCounterMode(display=False) as counter:
            call()
        assert counter.get_total_flops() == expected


def test_layerwise_dit_offload_installs_block_hooks_and_changes_nothing(tiny_wan22_folder):
    """Both experts get diffusers' block-level group offloading; the frames are the resident run's."""
    from sgld import DiffGenerator

    settings = dict(seed=2, num_inference_steps=4, height=64, width=64, num_frames=9, return_frames=True,
                    save_output=False)
    resident = DiffGenerator.from_pretrained("tiny-wan22-t2v").generate("a red fox", **settings).frames
    gen = DiffGenerator.from_pretrained("tiny-wan22-t2v", dit_layerwise_offload=True)
    for name in ("transformer", "transformer_2"):
        module = gen.pipeline.components[name]
        assert gen.pipeline.placement.home(name).type == "cpu"
        hooked = [m for m in module.modules() if getattr(m, "_diffusers_hook", None) is not None
                  and m._diffusers_hook.get_hook("group_offloading") is not None]
        assert len(hooked) >= len(module.blocks)  # one group per block, plus the layers outside the blocks
    offloaded = gen.generate("a red fox", **settings).frames
    assert np.array_equal(offloaded, resident)


@pytest.mark.parametrize("options,match", [
    ({"dit_layerwise_offload": True, "dit_cpu_offload": True}, "whole-model DiT offload"),
    ({"dit_layerwise_offload": True, "enable_torch_compile": True}, "enable_torch_compile"),
    ({"dit_layerwise_offload": True, "cache": "first_block"}, "cache.kind=first_block"),
])
def test_layerwise_offload_refuses_unverified_combinations(options, match):
    from sgld.run_config import run_config_from_options
    from sgld.errors import UserError

    with pytest.raises(UserError, match=match):
        run_config_from_options({"model_path": "tiny-wan-t2v", **options})


def test_fp8_linear_is_close_to_the_bf16_layer_and_stores_e4m3():
    import torch

    from sgld.levers.fp8 import Fp8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(3, 10, 64, dtype=torch.bfloat16)
    x[0, 0] *= 50  # an outlier token: per-token scales keep it from costing the other tokens precision
    fp8 = Fp8Linear(linear, hardware=False)
    assert fp8.weight_fp8.dtype == torch.float8_e4m3fn and fp8.weight_scale.shape == (1, 48)
    out, ref = fp8(x), linear(x)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    assert rel(out[1:], ref[1:]) < 0.06  # e4m3 carries 3 mantissa bits: a few percent, not more
    assert rel(out[0, 1:], ref[0, 1:]) < 0.06


def test_fp8_converts_the_blocks_linear_layers_but_not_the_modulation():
    import torch
    from diffusers import FluxTransformer2DModel

    from sgld.levers.fp8 import Fp8Linear, quantize_blocks_fp8
    from sgld.model_builders.tiny import materialize_tiny

    transformer = FluxTransformer2DModel.from_pretrained(materialize_tiny("tiny-flux"), subfolder="transformer")
    count = quantize_blocks_fp8(transformer, torch.device("cpu"))
    block, single = transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]
    assert isinstance(block.attn.to_q, Fp8Linear) and isinstance(block.ff.net[2], Fp8Linear)
    assert isinstance(single.proj_mlp, Fp8Linear) and isinstance(single.attn.to_k, Fp8Linear)
    for modulation in (block.norm1.linear, block.norm1_context.linear, single.norm.linear):
        assert type(modulation) is torch.nn.Linear
    assert type(transformer.proj_out) is torch.nn.Linear and type(transformer.x_embedder) is torch.nn.Linear
    expected = 12 * len(transformer.transformer_blocks) + 5 * len(transformer.single_transformer_blocks)
    assert count == expected


def test_fp8_quantization_runs_end_to_end_and_changes_the_output_a_little(tiny_wan_folder, tiny_wan_generator):
    lossless = tiny_wan_generator.generate("a red fox", **SMALL).frames
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v", quantization="fp8")
    from sgld.levers.fp8 import Fp8Linear

    assert isinstance(gen.pipeline.components["transformer"].blocks[0].attn1.to_q, Fp8Linear)
    frames = gen.generate("a red fox", **SMALL).frames
    diff = np.abs(frames.astype(int) - lossless.astype(int))
    assert 0 < diff.max() and diff.mean() < 8  # lossy, but the same video


def test_quantization_option_is_checked():
    from sgld.run_config import run_config_from_options

    with pytest.raises(UserError, match="quantization='int4' is not one of none, fp8"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "quantization": "int4"})
    with pytest.raises(UserError, match="model.quantization=fp8"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "quantization": "fp8", "dit_layerwise_offload": True})
    with pytest.raises(UserError, match="attention_backend=fa3 is not verified with sequence parallelism"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "attention_backend": "fa3", "num_gpus": 2})


@pytest.mark.parametrize("backend", ["sage", "fa3", "fa3_fp8"])
def test_optional_attention_backends_fall_back_with_a_message_where_they_cannot_run(
        backend, tiny_wan_folder, tiny_wan_generator, caplog):
    import logging

    lossless = tiny_wan_generator.generate("a red fox", **SMALL).frames
    with caplog.at_level(logging.WARNING, logger="sgld.levers.attention"):
        gen = DiffGenerator.from_pretrained("tiny-wan-t2v", attention_backend=backend)
    assert (f"attention_backend='{backend}' is not available here (it needs a CUDA GPU, this run is on cpu)"
            in caplog.text)
    assert np.array_equal(gen.generate("a red fox", **SMALL).frames, lossless)


def test_an_attention_backend_is_the_models_own_not_the_process_default(tiny_wan_folder):
    """diffusers' set_attention_backend also sets a process-wide default; sgld keeps its choice per model."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v", attention_backend="math")
    assert _AttentionBackendRegistry._active_backend == default
    backends = {getattr(m.processor, "_attention_backend", None)
                for m in gen.pipeline.components["transformer"].modules() if hasattr(m, "processor")}
    assert backends == {"_native_math"}


def test_auto_attention_picks_fa3_where_it_runs_on_one_shard(monkeypatch):
    import torch

    from sgld.levers import attention

    gpu = torch.device("cuda")
    monkeypatch.setattr(attention, "optional_backend_unavailable_reason", lambda backend, device: None)
    assert attention.auto_attention_backend(gpu, sp_size=1) == "fa3"
    assert attention.auto_attention_backend(gpu, sp_size=2) == "auto"  # sequence parallel keeps its verified kernels
    monkeypatch.setattr(attention, "optional_backend_unavailable_reason", lambda backend, device: "not installed")
    assert attention.auto_attention_backend(gpu, sp_size=1) == "auto"


def test_maskless_attention_is_refused_for_a_model_that_masks_its_text():
    from sgld.run_config import run_config_from_options
    from sgld.models.folder_model import FolderModel

    message = "attention_backend='sage' takes no attention mask, and HunyuanVideoTransformer3DModel masks its text padding"
    with pytest.raises(UserError, match=message):
        DiffGenerator.from_pretrained("tiny-hunyuan", attention_backend="sage")
    # The CLI and the server refuse it from the folder's configs, before any weights load.
    run = run_config_from_options({"model_path": "tiny-hunyuan", "attention_backend": "sage"})
    with pytest.raises(UserError, match=message):
        FolderModel.of(run.model.path).spec.check_run(run)


def test_cuda_graph_signatures_tell_apart_what_a_captured_graph_depends_on():
    from sgld.levers.cuda_graph import signature

    x = torch.zeros(1, 4, 8)
    assert signature({"hidden_states": x, "txt_seq_lens": [3]}) == signature({"txt_seq_lens": [3], "hidden_states": torch.ones(1, 4, 8)})
    assert signature({"hidden_states": x}) != signature({"hidden_states": torch.zeros(2, 4, 8)})  # batch
    assert signature({"hidden_states": x}) != signature({"hidden_states": x.to(torch.bfloat16)})
    assert signature({"hidden_states": x}) != signature({"hidden_states": x.transpose(1, 2).contiguous().transpose(1, 2)})
    assert signature({"hidden_states": x, "txt_seq_lens": [3]}) != signature({"hidden_states": x, "txt_seq_lens": [4]})
    assert signature({"attention_kwargs": {"scale": 1.0}}) != signature({"attention_kwargs": {"scale": 0.5}})


def test_cuda_graphs_run_without_graphs_on_cpu_saying_so(tiny_wan_folder, tiny_wan_generator, caplog):
    import logging

    lossless = tiny_wan_generator.generate("a red fox", **SMALL).frames
    with caplog.at_level(logging.WARNING, logger="sgld.levers.cuda_graph"):
        gen = DiffGenerator.from_pretrained("tiny-wan-t2v", cuda_graphs=True)
    assert "cuda_graphs: needs a CUDA GPU, this run is on cpu; running without graphs" in caplog.text
    assert np.array_equal(gen.generate("a red fox", **SMALL).frames, lossless)


@pytest.mark.parametrize("other,named", [({"cache": "first_block"}, r"a step cache \(cache.kind=first_block\)"),
                                         ({"dit_cpu_offload": True}, "offload.dit=model"),
                                         ({"num_gpus": 2, "ulysses_degree": 2}, "sequence parallelism"),
                                         ({"lora_path": "x.safetensors"}, r"LoRA adapters \(model.loras")])
def test_cuda_graphs_refuse_what_moves_weights_or_changes_the_forward(other, named):
    from sgld.run_config import run_config_from_options

    with pytest.raises(UserError, match=f"model.cuda_graphs cannot be combined with {named}"):
        run_config_from_options({"model_path": "tiny-wan-t2v", "cuda_graphs": True, **other})
