"""Wan2.2-A14B (two 14B experts) at 480p 81 frames: peak GPU memory and speed with and without offload.

    python bench/offload.py --out offload.json [--steps 4]

The two experts wait in CPU memory (``--dit-cpu-offload``, pinned with ``--pin``); each
expert comes to the GPU for its run of consecutive steps; the UMT5 encoder and the VAE stay. Then the same model runs with everything resident, where the GPU is large
enough, for the slowdown. Weights are random (``random:``): memory and speed do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "random:Wan-AI/Wan2.2-T2V-A14B-Diffusers"
PROMPT = "A red fox runs through fresh snow at dawn, cinematic, detailed fur, slow motion"


def run_once(gen, steps: int) -> dict:
    """One generation of ``steps`` steps: wall time, step gaps, stage times, peak memory."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ticks: list[float] = []

    def on_step(done: int, total: int) -> None:
        torch.cuda.synchronize()
        ticks.append(time.perf_counter())

    start = time.perf_counter()
    result = gen.generate(PROMPT, height=480, width=832, num_frames=81, num_inference_steps=steps, seed=0,
                          save_output=False, step_callback=on_step)
    torch.cuda.synchronize()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return {"e2e_s": time.perf_counter() - start, "step_gaps_s": gaps, "median_step_s": statistics.median(gaps[1:]),
            "timings": result.timings, "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def main() -> int:
    """Measure offloaded, then resident; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("offload.json"))
    parser.add_argument("--pin", action="store_true", help="pin the experts' CPU copies (--pin-cpu-memory)")
    args = parser.parse_args()
    from sgld import DiffGenerator
    from sgld.api import quiet_library_logs

    quiet_library_logs()
    start = time.perf_counter()
    gen = DiffGenerator.from_pretrained(MODEL, device="cuda", dit_cpu_offload=True, pin_cpu_memory=args.pin)
    print(f"loaded in {time.perf_counter() - start:.0f} s; GPU allocated {torch.cuda.memory_allocated() / 2**30:.1f} GiB",
          flush=True)
    out: dict = {"command": " ".join(sys.argv), "model": MODEL, "load_s": time.perf_counter() - start,
                 "gpu": torch.cuda.get_device_name(), "gpu_total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30}
    gen.generate(PROMPT, height=480, width=832, num_frames=81, num_inference_steps=2, seed=0, save_output=False)  # warm-up
    out["offloaded"] = run_once(gen, args.steps)
    print("offloaded:", json.dumps(out["offloaded"]), flush=True)
    args.out.write_text(json.dumps(out, indent=2))

    placement = gen.pipeline.placement
    for name in sorted(placement.offloaded):
        module = gen.pipeline.components.get(name)
        if module is not None:
            module.to("cuda")
    placement.offloaded = set()
    torch.cuda.empty_cache()
    gen.generate(PROMPT, height=480, width=832, num_frames=81, num_inference_steps=2, seed=0, save_output=False)
    out["resident"] = run_once(gen, args.steps)
    print("resident:", json.dumps(out["resident"]), flush=True)
    off, res = out["offloaded"], out["resident"]
    out["slowdown_e2e"] = off["e2e_s"] / res["e2e_s"]
    print(f"\nWan2.2-A14B 480p 81f, {args.steps} steps: offloaded peak {off['peak_allocated_gib']:.1f} GiB "
          f"(reserved {off['peak_reserved_gib']:.1f}), {off['e2e_s']:.1f} s; resident peak {res['peak_allocated_gib']:.1f} GiB, "
          f"{res['e2e_s']:.1f} s; offload costs {out['slowdown_e2e']:.2f}x end to end")
    args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
