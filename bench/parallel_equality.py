"""Run each parallel layout on N processes (GPUs, or CPU gloo) and compare with the 1-process output.

    python bench/parallel_equality.py --num-gpus 2 [--models tiny-wan-t2v tiny-flux ...] [--json out.json]

Prints one line per (model, layout): the max per-pixel difference (0-255) against the
single-process frames and the wall time of both runs. Layouts that need more ranks than
--num-gpus are skipped.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

LAYOUTS = {
    "ulysses": lambda n: dict(ulysses_degree=n),
    "ring": lambda n: dict(ring_degree=n),
    "usp": lambda n: dict(ulysses_degree=2, ring_degree=n // 2) if n >= 4 else None,
    "cfg": lambda n: dict(enable_cfg_parallel=True, ulysses_degree=n // 2) if n >= 2 else None,
    "ulysses+tp": lambda n: dict(ulysses_degree=n, tp_size=n),
    "ulysses+vae_sp": lambda n: dict(ulysses_degree=n, vae_sp=True, vae_tiling=True,
                                     vae_config={"tile_sample_min_height": 32, "tile_sample_min_width": 32}),
}
MODEL_SETTINGS = {
    "tiny-wan-t2v": dict(height=64, width=80, num_frames=9),
    "tiny-flux": dict(height=64, width=64),
    "tiny-qwen-image": dict(height=64, width=48),
}
# What each family supports: FLUX has no CFG branch; T5 tensor parallel and VAE sp need Wan-like parts.
SKIP = {("tiny-flux", "cfg"), ("tiny-flux", "ulysses+vae_sp"), ("tiny-qwen-image", "ulysses+tp"),
        ("tiny-qwen-image", "ulysses+vae_sp")}


def run(options: dict):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    start = time.perf_counter()
    frames = run_generation(run_config_from_options(options)).frames
    return frames.astype(np.int16), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-gpus", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(MODEL_SETTINGS))
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS))
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for model in args.models:
        base = dict(model_path=model, prompt="a red fox running through fresh snow", seed=3, num_inference_steps=2,
                    save_output=False, return_frames=True, **MODEL_SETTINGS[model])
        references = {}
        for name in args.layouts:
            layout = LAYOUTS[name](args.num_gpus)
            if layout is None or (model, name) in SKIP:
                continue
            ref_key = "tiled" if "vae_sp" in name else "plain"
            if ref_key not in references:
                extra = {k: layout[k] for k in ("vae_tiling", "vae_config") if k in layout}
                references[ref_key] = run({**base, **extra})
            reference, single_s = references[ref_key]
            try:
                frames, parallel_s = run({**base, **layout, "num_gpus": args.num_gpus})
                row = dict(model=model, layout=name, num_gpus=args.num_gpus,
                           max_diff=int(np.abs(frames - reference).max()), single_s=round(single_s, 2),
                           parallel_s=round(parallel_s, 2))
            except Exception as exc:  # noqa: BLE001 - report and go on to the next layout
                row = dict(model=model, layout=name, num_gpus=args.num_gpus, error=f"{type(exc).__name__}: {exc}")
            print(json.dumps(row), flush=True)  # stdout: one JSON line per row (progress bars go to stderr)
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
