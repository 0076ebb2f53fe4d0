"""Where a DiT forward's GPU time goes: kernels summed by kind (attention, matmul, fused elementwise, other).

Used by ``bench/speed.py --profile``: the transformer's inputs are caught during a real
generation, then a few forwards run back to back, timed, and again under torch.profiler.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

# Checked in order: cuDNN's attention kernels also carry "wgmma"/"gemm"-like names.
KINDS = (
    ("attention", re.compile(r"fmha|flash|attn|attention|sdpa|sage|qk_int8|softmax", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|xmma|scaled_mm|matmul|sm90_|sm80_", re.I)),
    ("fused elementwise (Inductor/Triton)", re.compile(r"^triton_", re.I)),
    ("elementwise (ATen)", re.compile(r"elementwise|vectorized|reduce|norm|copy|cat|fill", re.I)),
)


def kind_of(kernel: str) -> str:
    """The kind a kernel name belongs to."""
    for kind, pattern in KINDS:
        if pattern.search(kernel):
            return kind
    return "other"


def capture_forward_inputs(module: torch.nn.Module, run: Callable[[], Any]) -> tuple[tuple, dict]:
    """The args and kwargs of ``module``'s first forward during ``run()``."""
    caught: list[tuple[tuple, dict]] = []

    def hook(mod, args, kwargs):
        if not caught:
            caught.append((args, dict(kwargs)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return caught[0]


def kernel_breakdown(module: torch.nn.Module, args: tuple, kwargs: dict, top: int = 15, forwards: int = 3,
                     sustain: int = 20) -> dict:
    """Device time of ``module(*args, **kwargs)`` by kernel kind, per forward over ``forwards`` back-to-back ones,
    the ``top`` kernels by time, and the wall time of a forward in the same back-to-back run without the profiler
    (CUDA events): kernel time over wall time is how busy the GPU was (host gaps and syncs show as the difference).
    Then ``sustain`` more forwards back to back, each timed: a card that lowers its clocks under sustained load
    (an H100 at its 700 W limit) shows as later forwards slower than the first."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        module(*args, **kwargs)  # warm: nothing left to compile or autotune inside the profile
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(forwards):
            module(*args, **kwargs)
        end.record()
        torch.cuda.synchronize()
        wall_ms = start.elapsed_time(end) / forwards
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(forwards):
                module(*args, **kwargs)
            torch.cuda.synchronize()
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(sustain + 1)]
        marks[0].record()
        for mark in marks[1:]:
            module(*args, **kwargs)
            mark.record()
        torch.cuda.synchronize()
        sustained = [round(a.elapsed_time(b), 2) for a, b in zip(marks, marks[1:])]
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        kernels.setdefault(event.name, []).append(event.time_range.elapsed_us() / 1e3 / forwards)
    by_kind: dict[str, float] = {}
    for name, times in kernels.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + sum(times)
    total = sum(by_kind.values())
    ranked = sorted(kernels.items(), key=lambda item: -sum(item[1]))[:top]
    return {
        "kernel_ms": round(total, 2),
        "wall_ms": round(wall_ms, 2),
        "busy": round(total / wall_ms, 3) if wall_ms else None,
        "forwards": forwards,
        "sustained_ms": sustained,
        "sustained_median_ms": sorted(sustained)[len(sustained) // 2],
        "by_kind_ms": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "by_kind_share": {k: round(v / total, 3) for k, v in by_kind.items()} if total else {},
        "top": [{"kernel": name[:120], "kind": kind_of(name), "calls": len(t) // forwards, "ms": round(sum(t), 2)}
                for name, t in ranked],
    }


def breakdown_table(label: str, report: dict) -> str:
    """A short markdown table of one breakdown."""
    lines = [f"{label}: {report['kernel_ms']:.1f} ms of kernels a forward, {report['wall_ms']:.1f} ms wall "
             f"({report['busy']:.0%} busy; {report['forwards']} back to back)",
             f"then {len(report['sustained_ms'])} back to back: first {report['sustained_ms'][0]:.1f} ms, last "
             f"{report['sustained_ms'][-1]:.1f} ms, median {report['sustained_median_ms']:.1f} ms",
             "", "| kind | ms | share |", "|---|---|---|"]
    for kind, ms in report["by_kind_ms"].items():
        lines.append(f"| {kind} | {ms:.1f} | {report['by_kind_share'][kind]:.0%} |")
    return "\n".join(lines)
