"""Wan VAE decode at a given size: time and peak memory for each precision, tiled and untiled.

    python bench/vae.py --height 720 --width 1280 --frames 81 --out vae.json [--tiny]

The VAE is the full-size Wan2.1 VAE with random weights (``random:`` model, made on the
GPU); the latent is random noise of the video's latent shape. Each setting decodes once
after one warm-up decode of its own; tiled settings use sgld's tiling (tile size from
``--tiles``, stride 3/4 of it). PSNR is against the fp32 untiled decode of the same latent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speed import psnr  # noqa: E402


def load_vae(tiny: bool, device: torch.device):
    """The Wan VAE in fp32 (random full-size weights on the GPU, or the tiny model's on the CPU)."""
    from diffusers import AutoencoderKLWan

    from sgld.model_builders.random_weights import build_random_module, materialize_random
    from sgld.model_builders.tiny import materialize_tiny

    if tiny:
        return AutoencoderKLWan.from_pretrained(materialize_tiny("tiny-wan-t2v"), subfolder="vae").to(device)
    folder = materialize_random("random:Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    return build_random_module("diffusers", AutoencoderKLWan, folder / "vae", torch.float32, device, seed=0)


def to_uint8(video: torch.Tensor):
    """Decoded (1, 3, F, H, W) in [-1, 1] -> uint8 numpy."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def decode(vae, latent: torch.Tensor, cuda: bool) -> tuple[torch.Tensor, float, float]:
    """(video, seconds, peak GiB) of one decode."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(latent.to(vae.dtype), return_dict=False)[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return video, seconds, peak


def main(argv: list[str] | None = None) -> int:
    """Time every (precision, tiling) setting; print a table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--tiles", type=int, default=256, help="tile size in pixels (tiled settings)")
    parser.add_argument("--tiny", action="store_true", help="the tiny VAE on the CPU (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench_vae.json"))
    args = parser.parse_args(argv)

    from sgld.models.components import DTYPES
    from sgld.models.vae_setup import enable_vae_tiling

    device = torch.device("cpu" if args.tiny else "cuda")
    cuda = device.type == "cuda"
    vae = load_vae(args.tiny, device)
    factor = 8
    latent = torch.randn(1, vae.config.z_dim, (args.frames - 1) // 4 + 1, args.height // factor, args.width // factor,
                         generator=torch.Generator().manual_seed(0)).to(device)
    rows, reference = [], None
    for precision in args.precisions.split(","):
        vae.to(DTYPES[precision])
        for tiled in (False, True):
            if tiled:
                enable_vae_tiling(vae, args.tiles, args.tiles)
            else:
                vae.disable_tiling()
            decode(vae, latent, cuda)  # warm-up: cuDNN picks its convolution algorithms
            video, seconds, peak = decode(vae, latent, cuda)
            frames = to_uint8(video)
            if reference is None:
                reference = frames
            row = {"precision": precision, "tiled": tiled, "decode_s": round(seconds, 3), "peak_gib": round(peak, 2),
                   "psnr_db_vs_fp32_untiled": round(psnr(frames, reference), 1), "shape": list(video.shape)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            del video
            if cuda:
                torch.cuda.empty_cache()
    meta = {"command": " ".join(sys.argv), "latent_shape": list(latent.shape), "tiles": args.tiles,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| precision | tiled | decode s | peak GiB | PSNR dB vs fp32 untiled |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {'yes' if r['tiled'] else 'no'} | {r['decode_s']:.2f} | {r['peak_gib']:.1f} | "
              f"{r['psnr_db_vs_fp32_untiled']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
