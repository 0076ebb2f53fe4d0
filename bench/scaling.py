"""Multi-GPU scaling: per-step times of parallel layouts, output equality with 1 GPU, NCCL time from a profile.

    python3 bench/scaling.py --workload wan14b_720p --layouts 1 2:ulysses=2 4:ulysses=4 4:ring=4 \\
        4:ulysses=2,ring=2 4:cfg,ulysses=2 --steps 3 --profile 4:ulysses=4 --out scaling.json

A layout is ``N[:key=value,...]``: N ranks (torchrun's elastic launcher, as ``--num-gpus N``),
with ``ulysses``/``ring`` degrees, ``cfg`` (CFG parallel), ``tp``, ``vae_sp``. Each layout
runs in its own process group with freshly built random full-size weights; every step is
timed after a device synchronize (benchmark only: sgld's loop itself does not sync).
Steady s/step is the mean of steps 2..n; the 1-GPU layout is the reference for efficiency
t1 / (N * tN) and for output equality (max/mean per-pixel difference of rank 0's frames).
``--profile LAYOUT`` also records one step under torch.profiler and sums the NCCL kernels.
``--workload tiny`` runs on the CPU with gloo (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

WORKLOADS = {
    "wan14b_720p": dict(model_path="random:Wan-AI/Wan2.1-T2V-14B-Diffusers", height=720, width=1280, num_frames=81,
                        full_steps=50),
    "wan13b_480p": dict(model_path="random:Wan-AI/Wan2.1-T2V-1.3B-Diffusers", height=480, width=832, num_frames=81,
                        full_steps=50),
    "a14b_480p": dict(model_path="random:Wan-AI/Wan2.2-T2V-A14B-Diffusers", height=480, width=832, num_frames=81,
                      full_steps=40),
    "flux_1024": dict(model_path="random:black-forest-labs/FLUX.1-dev", height=1024, width=1024, full_steps=28),
    "tiny": dict(model_path="tiny-wan-t2v", height=64, width=64, num_frames=9, full_steps=4),
}
LAYOUT_KEYS = {"ulysses": "ulysses_degree", "ring": "ring_degree", "tp": "tp_size"}
FLAGS = {"cfg": "enable_cfg_parallel", "vae_sp": "vae_sp"}


def parse_layout(spec: str) -> dict:
    """``4:ulysses=2,cfg`` -> {"num_gpus": 4, "ulysses_degree": 2, "enable_cfg_parallel": True}."""
    count, _, rest = spec.partition(":")
    options = {"num_gpus": int(count)}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key in FLAGS:
            options[FLAGS[key]] = True
        elif key in LAYOUT_KEYS:
            options[LAYOUT_KEYS[key]] = int(value)
        else:
            raise SystemExit(f"unknown layout key {key!r} in {spec!r} (known: {', '.join([*LAYOUT_KEYS, *FLAGS])})")
    if options.get("vae_sp"):
        options["vae_tiling"] = True
    return options


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_rank(run, frames_file: str, profile: bool, warmup: bool = False):
    """One rank: load, (warm up,) generate with timed steps (and a profiled step); rank 0 returns the numbers.

    ``warmup``: one 2-step generation first, so a compiled run's timed generation is what a warm
    server's request costs (the compile is reported as ``warmup_s``).
    """
    import torch

    from sgld.api import DiffGenerator
    from sgld.parallel.state import init_distributed, shutdown

    state = init_distributed(run)
    try:
        start = time.perf_counter()
        generator = DiffGenerator.from_run_config(run, state)
        _sync(state.device)
        load_s = time.perf_counter() - start
        if os.environ.get("SGLD_BENCH_COMM_OVERLAP") == "0":  # A/B of the compiled blocks' comm reordering
            import torch._inductor.config as inductor

            inductor.reorder_for_compute_comm_overlap = False
        warmup_s = None
        if warmup:
            start = time.perf_counter()
            generator.generate(num_inference_steps=2, save_output=False)
            _sync(state.device)
            warmup_s = time.perf_counter() - start
        marks: list[float] = []

        def on_step(done: int, total: int) -> None:
            _sync(state.device)
            marks.append(time.perf_counter())

        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)
        begin = time.perf_counter()
        result = generator.generate(step_callback=on_step, save_output=False, return_frames=state.is_main)
        _sync(state.device)
        e2e_s = time.perf_counter() - begin
        peak = torch.cuda.max_memory_allocated(state.device) / 2**30 if state.device.type == "cuda" else None
        comm = None
        if profile:
            comm = _profiled_step(generator, state)
        if not state.is_main:
            return None
        np.save(frames_file, result.frames)
        return {"load_s": load_s, "warmup_s": warmup_s, "e2e_s": e2e_s, "step_s": list(np.diff(marks)), "timings": result.timings,
                "peak_alloc_gib": peak, "comm": comm}
    finally:
        shutdown()


def _profiled_step(generator, state) -> dict:
    """One 1-step generation under torch.profiler: device time of NCCL kernels against all kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if state.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        generator.generate(num_inference_steps=1, save_output=False)
        _sync(state.device)
    nccl, total, by_kind = 0.0, 0.0, {}
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", 0) or 0
        if device_us <= 0:
            continue
        total += device_us
        if "nccl" in event.key.lower():
            nccl += device_us
            by_kind[event.key[:60]] = by_kind.get(event.key[:60], 0) + device_us / 1e3
    return {"nccl_ms": nccl / 1e3, "all_kernels_ms": total / 1e3, "nccl_kernels_ms": by_kind}


def run_layout(base: dict, spec: str, steps: int, profile: bool, workdir: Path, warmup: bool = False) -> dict:
    """Run one layout in its own process group; its timings, and where rank 0's frames are."""
    from sgld.run_config import run_config_from_options
    from sgld.parallel.launch import launch_function

    options = {**base, **parse_layout(spec), "num_inference_steps": steps}
    run = run_config_from_options(options)
    frames_file = str(workdir / f"{spec.replace(':', '_').replace(',', '_').replace('=', '')}.npy")
    start = time.perf_counter()
    row = launch_function(run, bench_rank, run, frames_file, profile, warmup)[0]
    row.update(layout=spec, wall_s=time.perf_counter() - start, frames_file=frames_file)
    return row


def summarise(rows: list[dict], full_steps: int) -> None:
    """Steady s/step, efficiency against 1 GPU, full-run extrapolation, equality with 1 GPU's frames."""
    reference = next((r for r in rows if parse_layout(r["layout"])["num_gpus"] == 1), None)
    ref_frames = np.load(reference["frames_file"]).astype(np.int16) if reference else None
    for row in rows:
        steps = row["step_s"]
        row["first_step_s"] = steps[0]
        row["steady_step_s"] = float(np.mean(steps[1:])) if len(steps) > 1 else steps[0]
        before = sum(v for k, v in row["timings"].items() if k not in ("denoise", "decode"))
        row["extrapolated_s"] = (before + steps[0] + (full_steps - 1) * row["steady_step_s"]
                                 + row["timings"].get("decode", 0.0))
        n = parse_layout(row["layout"])["num_gpus"]
        if reference is not None:
            row["efficiency"] = reference["steady_step_s"] / (n * row["steady_step_s"])
            frames = np.load(row["frames_file"]).astype(np.int16)
            diff = np.abs(frames - ref_frames)
            row["max_diff_255"], row["mean_diff_255"] = int(diff.max()), float(diff.mean())
    for row in rows:
        os.remove(row.pop("frames_file"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), required=True)
    parser.add_argument("--layouts", nargs="+", default=["1"], help="N[:ulysses=U,ring=R,cfg,tp=T,vae_sp]")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--profile", nargs="*", default=[], help="layouts to profile one step of")
    parser.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE",
                        help="extra sgld options for every layout, e.g. enable_torch_compile=true")
    parser.add_argument("--warmup", action="store_true",
                        help="one 2-step generation before the timed one (compiled runs: time a warm process)")
    parser.add_argument("--out", help="JSON file for the rows")
    args = parser.parse_args()
    spec = dict(WORKLOADS[args.workload])
    full_steps = spec.pop("full_steps")
    base = dict(spec, prompt="A red fox runs through fresh snow at dawn", seed=0, precision="bf16")
    if args.workload == "tiny":
        base.update(precision="fp32", device="cpu")
    for item in args.set:
        key, _, value = item.partition("=")
        base[key] = yaml.safe_load(value)  # true/false/numbers as YAML reads them
    rows = []
    with tempfile.TemporaryDirectory(prefix="sgld-scaling-") as workdir:
        for layout in args.layouts:
            try:
                row = run_layout(base, layout, args.steps, layout in args.profile, Path(workdir), args.warmup)
            except Exception as exc:  # noqa: BLE001 - one failed layout must not lose the others' rows
                row = {"layout": layout, "error": str(exc)[-500:]}
                print(f"{layout}: FAILED {row['error']}", flush=True)
            else:
                print(f"{layout}: steps {['%.3f' % s for s in row['step_s']]} s, load {row['load_s']:.1f} s, "
                      f"e2e {row['e2e_s']:.1f} s, peak {row['peak_alloc_gib']} GiB, comm {row['comm']}", flush=True)
            rows.append(row)
            if args.out:  # raw rows after every layout: a run cut short keeps what it measured
                Path(args.out).write_text(json.dumps({"workload": args.workload, "steps": args.steps, "rows": rows,
                                                      "complete": False}, indent=1))
        summarise([r for r in rows if "error" not in r], full_steps)
    for row in rows:
        if "error" not in row:
            print(f"{row['layout']:>18}: steady {row['steady_step_s']:.3f} s/step, first {row['first_step_s']:.3f} s, "
                  f"efficiency {row.get('efficiency', float('nan')):.3f}, {full_steps} steps ≈ {row['extrapolated_s']:.1f} s, "
                  f"vs 1 GPU max {row.get('max_diff_255')}/255 mean {row.get('mean_diff_255', float('nan')):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"workload": args.workload, "steps": args.steps, "set": args.set,
                                              "rows": rows, "complete": True}, indent=1))


if __name__ == "__main__":
    main()
