"""Cached against uncached outputs of one model: what Cache-DiT and TeaCache cost in quality, and what they save.

    python bench/quality.py --model-path Wan-AI/Wan2.1-T2V-1.3B-Diffusers --out wan_quality.json
    python bench/quality.py --tiny --out /tmp/quality.json       # the tiny built-in model on the CPU (a smoke test)

The model loads once; each variant is one request on it: ``lossless`` (no step cache), ``cache_dit`` (SGLang's defaults, or the SGLANG_CACHE_DIT_* /
--cache-dit-config settings), ``cache_dit_mask`` (a fixed step mask, cache-dit's ``medium`` preset with the static
policy: which steps compute does not depend on the weights), ``teacache`` (the published coefficients; families that
have them); ``--attention-backend`` / ``--enable-torch-compile`` put every variant on that attention and compiled DiT
(a lossy attention alone and combined with caching). Each reports end-to-end and denoise seconds, s/step, forwards
computed and served from the cache per branch, and against ``lossless``: PSNR, SSIM (Gaussian 11x11, sigma 1.5: scikit-image's gaussian_weights setting)
and LPIPS where pyiqa is installed with its weights cached (``--lpips``). Random weights say nothing about quality:
run it on a real model folder. Outputs are written beside the JSON for a look.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "A red fox runs through fresh snow at dawn, cinematic, detailed fur, slow motion"
# In this order: TeaCache runs before the first Cache-DiT request mounts cache-dit's wrappers (which replace the
# block lists TeaCache wraps).
VARIANTS = {
    "lossless": {},
    "teacache": {"enable_teacache": True},
    "cache_dit": {"enable_cache_dit": True},
    "cache_dit_mask": {"enable_cache_dit": True, "cache_dit_params": {"scm_preset": "medium", "scm_policy": "static"}},
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, in dB (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of uint8 (..., H, W, 3) arrays: Gaussian 11x11 window, sigma 1.5, per channel."""
    x = torch.from_numpy(a.reshape(-1, *a.shape[-3:])).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(b.reshape(-1, *b.shape[-3:])).permute(0, 3, 1, 2).double()
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords**2 / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, window, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    # Sample (N - 1) normalised covariances, as scikit-image's use_sample_covariance.
    n = 11 * 11
    vx, vy = (blur(x * x) - mx * mx) * n / (n - 1), (blur(y * y) - my * my) * n / (n - 1)
    cov = (blur(x * y) - mx * my) * n / (n - 1)
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())


def lpips(a: np.ndarray, b: np.ndarray, device: torch.device) -> float | None:
    """Mean LPIPS (pyiqa's, AlexNet) where pyiqa is installed and its weights load; None otherwise."""
    try:
        import pyiqa
    except ImportError:
        return None
    metric = pyiqa.create_metric("lpips", device=device)
    x = torch.from_numpy(a.reshape(-1, *a.shape[-3:])).permute(0, 3, 1, 2).float().div(255).to(device)
    y = torch.from_numpy(b.reshape(-1, *b.shape[-3:])).permute(0, 3, 1, 2).float().div(255).to(device)
    return float(metric(x, y).mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sgld import DiffGenerator
    from sgld.cache_support import TEACACHE_FAMILIES

    torch.set_num_threads(1) if args.tiny else None
    options: dict[str, Any] = {"device": args.device} if args.device else {}
    if args.attention_backend:
        options["attention_backend"] = args.attention_backend
    if args.enable_torch_compile:
        options["enable_torch_compile"] = True
    gen = DiffGenerator.from_pretrained(args.model_path, cache="none", **options)
    family = gen.pipeline.spec.name
    settings: dict[str, Any] = dict(prompt=args.prompt, seed=args.seed, save_output=not args.no_save, return_frames=True,
                                    output_path=str(args.out.parent / args.out.stem))
    for key in ("num_inference_steps", "height", "width", "num_frames", "guidance_scale"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    # Untimed: the first call pays for kernel selection and allocator growth, which would flatter the cached rows.
    gen.generate(**{**settings, "save_output": False, "num_inference_steps": 2})
    names = [v for v in args.variants.split(",") if v != "teacache" or family in TEACACHE_FAMILIES]
    results: dict[str, Any] = {}
    frames: dict[str, np.ndarray] = {}
    skipped = sorted(set(args.variants.split(",")) - set(names))
    report = {"model": args.model_path, "family": family, "device": str(gen.pipeline.device),
              "attention_backend": args.attention_backend, "torch_compile": args.enable_torch_compile, "settings": {
        k: v for k, v in settings.items() if k not in ("save_output", "return_frames", "output_path")},
        "results": results, "skipped": {name: f"no published TeaCache coefficients for {family}" for name in skipped}}
    for name in [n for n in VARIANTS if n in names or n == "lossless"]:
        if args.enable_torch_compile:  # untimed: mounting a cache recompiles the blocks it wraps (8 steps: the
            # fewest cache-dit's step masks take above its fixed 4- and 6-step ones)
            gen.generate(**{**settings, "save_output": False, "num_inference_steps": 8}, **VARIANTS[name])
        start = time.perf_counter()
        out = gen.generate(**settings, **VARIANTS[name], output_file_name=f"{name}{_extension(gen)}")
        e2e = time.perf_counter() - start
        frames[name] = out.frames
        steps = out.config.sampling.num_inference_steps
        row: dict[str, Any] = {"e2e_s": round(e2e, 3), "denoise_s": round(out.timings.get("denoise", 0.0), 3),
                               "s_per_step": round(out.timings.get("denoise", 0.0) / steps, 4), "steps": steps,
                               "file": str(out.path) if out.path else None}
        if out.step_cache is not None:
            row["computed"], row["cached"] = out.step_cache["computed"], out.step_cache["cached"]
        if name != "lossless":
            row["psnr_db"] = round(psnr(out.frames, frames["lossless"]), 2)
            row["ssim"] = round(ssim(out.frames, frames["lossless"]), 4)
            if args.lpips:
                row["lpips"] = lpips(out.frames, frames["lossless"], gen.pipeline.device)
        results[name] = row
        print(f"{name:>15}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "file"), flush=True)
        write(args.out, report)  # after each variant: a run stopped part-way keeps what it measured
    if args.finishing:
        with tempfile.TemporaryDirectory(prefix="sgld-finishing-") as folder:
            if args.random_finishing:
                args.rife, args.esrgan = random_finishing_weights(Path(folder))
            results["finishing"] = finishing_times(gen, frames["lossless"], results["lossless"]["e2e_s"], args)
        write(args.out, report)
    return report


def write(path: Path, report: dict[str, Any]) -> None:
    """The report as JSON at ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def random_finishing_weights(folder: Path) -> tuple[str, str]:
    """Seeded random weights of the released finishing networks (RIFE 4.22.lite's IFNet; Real-ESRGAN x4's RRDBNet:
    64 features, 23 blocks, growth 32) as safetensors in ``folder``: their time is the released weights' time."""
    from safetensors.torch import save_file

    from sgld.finishing.realesrgan import RRDBNet
    from sgld.finishing.rife import IFNet

    torch.manual_seed(0)
    rife, esrgan = folder / "rife.safetensors", folder / "RealESRGAN_x4.safetensors"
    save_file({k: v.contiguous() for k, v in IFNet().state_dict().items()}, str(rife))
    save_file({k: v.contiguous() for k, v in RRDBNet(4).state_dict().items()}, str(esrgan))
    return str(rife), str(esrgan)


def finishing_times(gen, frames: np.ndarray, generation_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """RIFE x2 and Real-ESRGAN x4 on the lossless output (SGLang's default weights, or --rife / --esrgan), each
    timed twice (the first includes loading the weights) and as a share of the generation's end-to-end time."""
    from types import SimpleNamespace

    from sgld.finishing.apply import finish

    video = gen.pipeline.spec.output == "video"
    out: dict[str, Any] = {}
    for name, settings in (
        ("rife_x2", dict(enable_frame_interpolation=True, frame_interpolation_exp=1, frame_interpolation_scale=1.0,
                         frame_interpolation_model_path=args.rife, enable_upscaling=False)),
        ("esrgan_x4", dict(enable_frame_interpolation=False, enable_upscaling=True, upscaling_scale=4,
                           upscaling_model_path=args.esrgan)),
    ):
        times = []
        for _ in range(2):
            timings: dict = {}
            finished, fps = finish(frames, 16, SimpleNamespace(**settings), video, gen.pipeline.device, True, timings)
            times.append(sum(timings.values()))
        out[name] = {"first_s": round(times[0], 3), "warm_s": round(times[1], 3),
                     "share_of_generation": round(times[1] / generation_s, 4), "frames_out": int(finished.shape[0]),
                     "size_out": list(finished.shape[1:3])}
        print(f"{name:>15}: " + ", ".join(f"{k}={v}" for k, v in out[name].items()), flush=True)
    return out


def _extension(gen) -> str:
    return ".mp4" if gen.pipeline.spec.output == "video" else ".png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="a model folder, Hub repo id or built-in name")
    parser.add_argument("--tiny", action="store_true", help="tiny-wan-t2v on the CPU, 8 steps (a smoke test)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--seed", type=int, default=1024)
    parser.add_argument("--num-inference-steps", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--attention-backend", default=None,
                        help="as sgld's flag (e.g. sage, fa3_fp8): every variant on that attention, cached or not")
    parser.add_argument("--enable-torch-compile", action="store_true", help="every variant on the compiled DiT")
    parser.add_argument("--no-save", action="store_true", help="keep the outputs in memory (no files: no video encoder needed)")
    parser.add_argument("--lpips", action="store_true", help="LPIPS through pyiqa (its weights must be cached)")
    parser.add_argument("--finishing", action="store_true", help="also time RIFE x2 and Real-ESRGAN x4 on the lossless output")
    parser.add_argument("--rife", default=None, help="RIFE 4.22.lite weights (default: elfgum/RIFE-4.22.lite)")
    parser.add_argument("--esrgan", default=None, help="Real-ESRGAN weights (default: ai-forever/Real-ESRGAN)")
    parser.add_argument("--random-finishing", action="store_true",
                        help="--finishing on random weights of the released shapes (no download; their time is the same)")
    parser.add_argument("--out", type=Path, default=Path("quality.json"))
    args = parser.parse_args(argv)
    args.finishing = args.finishing or args.random_finishing
    if args.tiny:
        args.model_path = args.model_path or "tiny-wan-t2v"
        args.num_inference_steps = args.num_inference_steps or 8
        args.height, args.width, args.num_frames = args.height or 32, args.width or 32, args.num_frames or 5
    if not args.model_path:
        parser.error("--model-path (or --tiny) is required")
    run(args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
