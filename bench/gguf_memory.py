"""GGUF DiTs under a memory budget: peak GPU memory, s/step and PSNR of Q8_0 / Q4_K against bf16, and the memory
plan's predicted peak against the measured one.

    python bench/gguf_memory.py --workload flux --budgets 12 --out flux12.json      # FLUX.1-dev 1024², 28 steps
    python bench/gguf_memory.py --workload wan14b --budgets 24 --steps 4 --out wan24.json   # Wan2.1-14B 832x480, 81 frames
    python bench/gguf_memory.py --tiny --out tiny.json                              # CPU: tiny-flux, the same path

Weights are random (``random:``): the bf16 run loads the model, makes its output, then writes its DiT as
GGUF (Q8_0 and Q4_K, made here with sgld.model_builders.gguf_writer, quantized on the GPU, in the original
checkpoint's tensor names) and each quantized run loads the same folder with ``--dit-weights`` that file,
under the same ``--max-gpu-memory`` (the plan decides the offload and tiling). Peak memory is the most
allocated after loading; s/step the median gap between step callbacks; PSNR over the output's pixels
against the bf16 output of the same budget, seed and steps.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "A red fox runs through fresh snow at dawn, cinematic, detailed fur, slow motion"
# workload -> (model path, sampling options)
WORKLOADS = {
    "flux": ("random:black-forest-labs/FLUX.1-dev", dict(height=1024, width=1024, num_inference_steps=28)),
    "wan14b": ("random:Wan-AI/Wan2.1-T2V-14B-Diffusers", dict(height=480, width=832, num_frames=81,
                                                              num_inference_steps=50)),
    "tiny": ("tiny-flux", dict(height=64, width=64, num_inference_steps=4)),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 outputs (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def run_once(gen, sampling: dict, cuda: bool) -> dict:
    """One generation: its frames, median s/step, and the peak GPU memory allocated (None on a CPU)."""
    ticks: list[float] = []

    def on_step(done: int, total: int) -> None:
        if cuda:
            torch.cuda.synchronize()
        ticks.append(time.perf_counter())

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loaded = torch.cuda.memory_allocated() / 2**30 if cuda else None
    start = time.perf_counter()
    result = gen.generate(PROMPT, seed=0, save_output=False, return_frames=True, step_callback=on_step, **sampling)
    e2e = time.perf_counter() - start
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return {"frames": result.frames, "s_per_step": statistics.median(gaps) if gaps else None, "e2e_s": e2e,
            "timings": result.timings, "allocated_before_gib": loaded,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def predicted(gen, folder: Path, budget_gib: float) -> tuple[float, str]:
    """The plan's predicted peak (GiB) and line for the loaded placement (computed here on a CPU, where none is applied)."""
    from sgld.models.memory_plan import GIB, Planner

    memory = gen.pipeline.memory
    if memory is not None:
        plan = memory.planner.plan(memory.budget)
    else:
        plan = Planner.of(folder, gen.run).plan(int(budget_gib * GIB))
    return plan.peak / GIB, plan.describe()


def write_gguf(transformer: torch.nn.Module, path: Path, qtype: str, device: torch.device) -> dict:
    """The DiT as GGUF in the original checkpoint's names (diffusers' where its converter cannot take them back)."""
    from sgld.model_builders.gguf_writer import write_dit_gguf

    start = time.perf_counter()
    try:
        counts, names = write_dit_gguf(transformer, path, qtype, names="original", device=device), "original"
    except (ValueError, RuntimeError):  # tiny FLUX: diffusers' converter assumes the released 3072 width
        counts, names = write_dit_gguf(transformer, path, qtype, names="diffusers", device=device), "diffusers"
    return {"tensors": counts, "names": names, "file_gib": path.stat().st_size / 2**30,
            "write_s": time.perf_counter() - start}


def bench_budget(model: str, sampling: dict, budget: float, quants: list[str], work: Path, device: str,
                 report: Callable[[dict, str], None]) -> dict:
    """The model's own precision (bf16), then each quantized DiT, under ``budget`` GiB: one row each.

    ``report`` gets the rows and the name of each one as it is measured, so a run stopped part-way keeps what it measured."""
    from sgld import DiffGenerator
    from sgld.models.registry import resolve_model_folder

    cuda = device == "cuda"
    folder = resolve_model_folder(model)
    rows = {}
    # The request's size and steps as the run's own: the plan is made for them.
    options = dict(device=device, max_gpu_memory=budget, **sampling)
    gen = DiffGenerator.from_pretrained(model, **options)
    reference = run_once(gen, sampling, cuda)
    base = str(gen.run.model.precision)  # bf16 at full size; the tiny models run fp32
    rows[base] = {k: v for k, v in reference.items() if k != "frames"}
    rows[base]["predicted_gib"], rows[base]["plan"] = predicted(gen, folder, budget)
    report(rows, base)
    files = {}
    for qtype in quants:
        files[qtype] = work / f"{Path(folder).name}-{qtype}.gguf"
        rows[qtype] = {"gguf": write_gguf(gen.pipeline.components["transformer"], files[qtype], qtype,
                                          torch.device(device))}
    gen.close()  # frees it now: a generator sits in reference cycles (see DiffGenerator.close)
    for qtype in quants:
        gen = DiffGenerator.from_pretrained(model, dit_weights=str(files[qtype]), **options)
        out = run_once(gen, sampling, cuda)
        rows[qtype].update({k: v for k, v in out.items() if k != "frames"})
        rows[qtype][f"psnr_db_vs_{base}"] = psnr(out["frames"], reference["frames"])
        rows[qtype]["predicted_gib"], rows[qtype]["plan"] = predicted(gen, folder, budget)
        report(rows, qtype)
        gen.close()
        files[qtype].unlink()
    return rows


def with_ratios(rows: dict) -> dict:
    """The rows with each measured one's ``predicted_over_measured``."""
    for row in rows.values():
        if row.get("peak_gib") and row.get("predicted_gib"):
            row["predicted_over_measured"] = row["predicted_gib"] / row["peak_gib"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="flux")
    parser.add_argument("--budgets", default="12,24", help="GiB, comma-separated (--max-gpu-memory of each run)")
    parser.add_argument("--quants", default="Q8_0,Q4_K")
    parser.add_argument("--steps", type=int, help="denoise steps (default: the workload's; s/step is their median)")
    parser.add_argument("--tiny", action="store_true", help="tiny-flux on the CPU: the same path, no GPU")
    parser.add_argument("--work", type=Path, help="where the GGUF files are written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("gguf.json"))
    args = parser.parse_args(argv)
    from sgld.api import quiet_library_logs

    quiet_library_logs()
    workload = "tiny" if args.tiny else args.workload
    model, sampling = WORKLOADS[workload]
    sampling = dict(sampling, **({"num_inference_steps": args.steps} if args.steps else {}))
    device = "cpu" if args.tiny else "cuda"
    results = {"workload": workload, "model": model, "sampling": sampling, "device": device,
               "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "budgets": {}}
    with tempfile.TemporaryDirectory(prefix="sgld-gguf-", dir=args.work) as work:
        for budget in (float(b) for b in args.budgets.split(",")):
            def report(rows: dict, name: str, budget: float = budget) -> None:
                results["budgets"][str(budget)] = with_ratios(rows)
                row = rows[name]
                print(f"{workload} {budget:g} GiB {name}: " + json.dumps({k: v for k, v in row.items() if k != "timings"}),
                      flush=True)
                args.out.write_text(json.dumps(results, indent=2, default=str))

            bench_budget(model, sampling, budget, [q for q in args.quants.split(",") if q], Path(work), device, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
