"""Classifier-free guidance's two branches as one forward of batch 2 against two forwards of batch 1, on Wan2.1's DiT.

    python3 bench/cfg_batching.py --out cfg_batching.json            # on a GPU: Wan2.1-1.3B and 14B at 480p x 81
    python3 bench/cfg_batching.py --tiny                             # the same code on a tiny DiT on the CPU

sgld runs the branches of Wan-style CFG batched (``sgld.stages.denoising.CFG_MODES``), diffusers runs them one after
the other. The speed bench's eager rows have Wan2.1-1.3B's batched forward at 614 ms a branch against diffusers' 558
sequential on an H100 (docs/performance.md): this measures the two ways on the same module and inputs, eager and
compiled (and with FA3 where installed), with the GPU time of each kernel kind, so the cost can be placed. Each
figure is the median of back-to-back forwards (CUDA events); "sequential" alternates the cond and uncond text as
a denoise step does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_profile import kernel_sums, median  # noqa: E402

# (name, DiT config, latent frames, latent height, latent width): 480p x 81 frames (21 x 60 x 104 latents).
TINY = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4,
        "out_channels": 4, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None,
        "rope_max_seq_len": 64}


def wan_models(tiny: bool) -> list[tuple[str, dict, tuple[int, int, int]]]:
    """The DiTs measured and their latent grids."""
    if tiny:
        return [("tiny", TINY, (3, 8, 8))]
    from sgld.model_builders.full_size import WAN_1_3B, WAN_14B
    return [("wan13_480p", WAN_1_3B, (21, 60, 104)), ("wan14b_480p", WAN_14B, (21, 60, 104))]


def make_inputs(config: dict, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype,
                text_tokens: int = 512, prompt_tokens: int | None = None) -> tuple[dict, dict, dict]:
    """The cond and uncond forwards' kwargs (batch 1 each) and the batched one's (batch 2)."""
    generator = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(device, dtype)

    latents = rand(1, config["in_channels"], *grid)
    cond_text, uncond_text = rand(1, text_tokens, config["text_dim"]), rand(1, text_tokens, config["text_dim"])
    if prompt_tokens is not None:  # as Wan's pipelines pad: zeros after the prompt's tokens (the uncond: "")
        cond_text[:, prompt_tokens:] = 0
        uncond_text[:, 1:] = 0
    timestep = torch.tensor([700.0], device=device)
    cond = {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": cond_text, "return_dict": False}
    uncond = {**cond, "encoder_hidden_states": uncond_text}
    batched = {"hidden_states": latents.repeat(2, 1, 1, 1, 1), "timestep": timestep.repeat(2),
               "encoder_hidden_states": torch.cat([cond_text, uncond_text]), "return_dict": False}
    return cond, uncond, batched


def timed(fn: Callable[[], Any], cuda: bool, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` run back to back (CUDA events; the host clock off CUDA)."""
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            times.append((start, end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    if cuda:
        torch.cuda.synchronize()
        return [round(a.elapsed_time(b), 2) for a, b in times]
    return [round(t, 2) for t in times]


def profiled_kinds(fn: Callable[[], Any]) -> dict:
    """GPU time by kernel kind of one ``fn()`` (``kernel_profile.kernel_sums``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return kernel_sums(prof, forwards=1, top=8)


def measure(module: torch.nn.Module, cond: dict, uncond: dict, batched: dict, cuda: bool, repeats: int) -> dict:
    """One configuration: a CFG step as two forwards and as one of batch 2, and how far their outputs differ."""
    def sequential():
        return module(**cond)[0], module(**uncond)[0]

    def together():
        return module(**batched)[0]

    with torch.no_grad():
        apart, joined = sequential(), together()  # also warms (and compiles) both shapes
        difference = max((apart[0] - joined[:1]).abs().max().item(), (apart[1] - joined[1:]).abs().max().item())
        sequential_ms, batched_ms = timed(sequential, cuda, repeats), timed(together, cuda, repeats)
        result = {"sequential_step_ms": sequential_ms, "batched_step_ms": batched_ms,
                  "sequential_median_ms": median(sequential_ms), "batched_median_ms": median(batched_ms),
                  "batched_over_sequential": round(median(batched_ms) / median(sequential_ms), 4),
                  "max_abs_diff": difference}
        if cuda:
            result["kernels_sequential"] = profiled_kinds(sequential)
            result["kernels_batched"] = profiled_kinds(together)
    return result


def keep_fp32(module: torch.nn.Module) -> None:
    """Back to fp32 the modules diffusers' ``from_pretrained`` keeps there (``_keep_in_fp32_modules``), as a
    loaded model has them."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    for name, param in module.named_parameters():
        if any(part in keep for part in name.split(".")):
            param.data = param.data.float()


def configurations(device: torch.device) -> list[tuple[str, Callable[[torch.nn.Module], None]]]:
    """(name, what to do to the module first), applied in order to the same module."""
    from speed import tuned_backend

    def eager(module):
        pass

    def compiled(module):
        module.compile_repeated_blocks(fullgraph=True)

    steps = [("eager", eager)]
    if device.type == "cuda":
        steps.append(("compiled", compiled))
        if tuned_backend(device) == "_flash_3":
            steps.append(("compiled_fa3", lambda module: module.set_attention_backend("_flash_3")))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny DiT on the CPU (smoke test)")
    parser.add_argument("--models", default=None, help="comma-separated names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help="text rows after this many are zeros, as Wan pads its prompts (default: all random)")
    parser.add_argument("--out", type=Path, default=Path("cfg_batching.json"))
    args = parser.parse_args(argv)
    from diffusers import WanTransformer3DModel

    cuda = not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    report: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                    "models": {}}
    for name, config, grid in wan_models(args.tiny):
        if args.models and name not in args.models.split(","):
            continue
        with torch.device(device):
            module = WanTransformer3DModel(**config).to(dtype).eval()
        keep_fp32(module)
        cond, uncond, batched = make_inputs(config, grid, device, dtype, 8 if args.tiny else 512,
                                              args.prompt_tokens)
        rows = {}
        for label, prepare in configurations(device):
            prepare(module)
            rows[label] = measure(module, cond, uncond, batched, cuda, args.repeats)
            print(name, label, json.dumps({k: v for k, v in rows[label].items() if not k.startswith("kernels")}),
                  flush=True)
            report["models"][name] = rows
            args.out.write_text(json.dumps(report, indent=2))
        del module
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
