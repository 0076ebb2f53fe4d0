"""Where a DiT forward's GPU time goes: kernels summed by kind (attention, matmul, fused elementwise, other).

Used by ``bench/speed.py --profile``: the transformer's inputs are caught during a real
generation, then a few forwards run back to back, timed, and again under torch.profiler.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_map

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


def capture_forward_inputs(module: torch.nn.Module, run: Callable[[], Any],
                           count: int = 1) -> list[tuple[tuple, dict]]:
    """The args and kwargs of ``module``'s first ``count`` forwards during ``run()`` (fewer if it made fewer)."""
    caught: list[tuple[tuple, dict]] = []

    def hook(mod, args, kwargs):
        if len(caught) < count:  # copies: a loop may update its tensors in place after the forward
            caught.append(tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, (args, dict(kwargs))))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return caught


def timed_forwards(module: torch.nn.Module, inputs: list[tuple[tuple, dict]], count: int,
                   sync_every: int = 0) -> list[float]:
    """Milliseconds of each of ``count`` forwards run back to back, cycling through ``inputs``; with
    ``sync_every`` the host waits for the GPU after every that many forwards (as a denoise loop's step end does),
    so the next forward starts from an idle GPU."""
    times = []
    for index in range(count):
        if sync_every and index % sync_every == 0:
            torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args, kwargs = inputs[index % len(inputs)]
        start.record()
        module(*args, **kwargs)
        end.record()
        times.append((start, end))
    torch.cuda.synchronize()
    return [round(a.elapsed_time(b), 2) for a, b in times]


def median(values: list[float]) -> float:
    """The middle value (upper middle of an even count)."""
    return sorted(values)[len(values) // 2]


def back_to_back_ms(fn: Callable[[], Any], cuda: bool, repeats: int = 20, calls: int = 20) -> float:
    """Median ms a call of ``fn()``: ``repeats`` timings of ``calls`` calls back to back (CUDA events; wall clock
    off CUDA), after 5 warm-up calls. Back to back, so a kernel of tens of microseconds is not timed as its launch
    (one call at a time, every form of bench/qk_norm_rope.py measured 0.12 ms: the host's dispatch)."""
    import time

    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / calls)
        else:
            began = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - began) * 1e3 / calls)
    return median(times)


def kernel_breakdown(module: torch.nn.Module, args: tuple, kwargs: dict, top: int = 15, forwards: int = 3,
                     sustain: int = 20, other: tuple[tuple, dict] | None = None,
                     late: tuple[tuple, dict] | None = None) -> dict:
    """Device time of ``module(*args, **kwargs)`` by kernel kind, per forward over ``forwards`` back-to-back ones,
    the ``top`` kernels by time, and the wall time of a forward in the same back-to-back run without the profiler
    (CUDA events): kernel time over wall time is how busy the GPU was (host gaps and syncs show as the difference).
    Then ``sustain`` more forwards back to back, each timed: a card that lowers its clocks under sustained load
    (an H100 at its 700 W limit) shows as later forwards slower than the first. With ``other`` (the second CFG
    branch's inputs, another text length, or the next step's), as many again alternating the two inputs, and
    alternating with the GPU synchronised before each pair as a denoise loop's step end does: what the pipeline's
    forwards meet that a repeated one does not. With ``late`` (a later step's inputs), as many again on those:
    under a power cap the clock, and so the time, depends on the values the kernels move."""
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
        sustained = timed_forwards(module, [(args, kwargs)], sustain)
        patterns = {}
        if other is not None:
            patterns["alternating_ms"] = timed_forwards(module, [(args, kwargs), other], sustain)
            patterns["stepwise_ms"] = timed_forwards(module, [(args, kwargs), other], sustain, sync_every=2)
        if late is not None:
            patterns["late_inputs_ms"] = timed_forwards(module, [late], sustain)
    return {**window(prof, wall_ms, forwards, top),
            "sustained_ms": sustained, "sustained_median_ms": median(sustained),
            **{key: times for key, times in patterns.items()},
            **{key.replace("_ms", "_median_ms"): median(times) for key, times in patterns.items()}}


def kernel_sums(prof: Any, forwards: int, top: int = 15) -> dict:
    """A finished profile's GPU kernels per forward: their sum (``kernel_ms``), by kind, and the ``top`` ones."""
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
        "by_kind_ms": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "by_kind_share": {k: round(v / total, 3) for k, v in by_kind.items()} if total else {},
        "top": [{"kernel": name[:120], "kind": kind_of(name), "calls": len(t) // forwards, "ms": round(sum(t), 2)}
                for name, t in ranked],
    }


def pipeline_breakdown(module: torch.nn.Module, run: Callable[[], Any], first: int = 1, forwards: int = 4,
                       top: int = 15) -> dict:
    """The same sums for ``module``'s forwards inside a real ``run()`` (a denoise loop's own calls, with whatever
    runs between them): the profiler and a CUDA event start at forward ``first`` and stop after ``forwards`` of
    them, so text encoding and decoding stay outside. Kernel time beside the window's wall time says whether the
    forwards' kernels are slower there than back to back, or the GPU waits between or inside them."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CUDA])
    seen, marks = [0], []

    def pre(mod, args, kwargs):
        if seen[0] == first:
            prof.start()
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
        seen[0] += 1

    def post(mod, args, output):
        if seen[0] == first + forwards:
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
            torch.cuda.synchronize()
            prof.stop()

    handles = [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        if len(marks) == 1:  # the run ended (or failed) inside the window: the profiler must not stay on
            prof.stop()
    if len(marks) < 2:
        return {"error": f"the run made {seen[0]} forwards, fewer than {first + forwards}"}
    return window(prof, marks[0].elapsed_time(marks[1]) / forwards, forwards, top)


def window(prof: Any, wall_ms: float, forwards: int, top: int) -> dict:
    """One profiled stretch of ``forwards`` forwards: wall and kernel ms a forward, how busy the GPU was."""
    sums = kernel_sums(prof, forwards, top)
    return {"wall_ms": round(wall_ms, 2), "forwards": forwards,
            "busy": round(sums["kernel_ms"] / wall_ms, 3) if wall_ms else None, **sums}


def profile_forwards(module: torch.nn.Module, run: Callable[[int], Any], sustain: int = 20) -> tuple[dict, tuple]:
    """``kernel_breakdown`` on the first forward of a 3-step ``run(steps)``, with the run's second forward as
    ``other`` and its last forward of the first one's shape (the same CFG branch) as ``late``, and
    ``pipeline_breakdown`` of a 4-step run under ``"in_pipeline"``; the report and the first forward's inputs."""
    from sgld.levers.cuda_graph import signature

    def shape(inputs: tuple[tuple, dict]) -> tuple:
        args, kwargs = inputs
        return signature({**{f"arg{i}": arg for i, arg in enumerate(args)}, **kwargs})

    caught = capture_forward_inputs(module, lambda: run(3), 6)
    first = caught[0]
    late = max(i for i, inputs in enumerate(caught) if shape(inputs) == shape(first))
    report = kernel_breakdown(module, *first, sustain=sustain, other=caught[1], late=caught[late])
    report["late_forward"] = late  # which forward of the run gave ``late`` (0 would mean none matched the first)
    report["in_pipeline"] = pipeline_breakdown(module, lambda: run(4), first=1, forwards=3)
    return report, first


def breakdown_table(label: str, report: dict) -> str:
    """A short markdown table of one breakdown."""
    lines = [f"{label}: {report['kernel_ms']:.1f} ms of kernels a forward, {report['wall_ms']:.1f} ms wall "
             f"({report['busy']:.0%} busy; {report['forwards']} forwards)",
             *([f"then {len(report['sustained_ms'])} back to back: first {report['sustained_ms'][0]:.1f} ms, "
                f"last {report['sustained_ms'][-1]:.1f} ms, median {report['sustained_median_ms']:.1f} ms"]
               if "sustained_ms" in report else []),
             *(f"{how}: median {report[key]:.1f} ms a forward"
               for key, how in (("alternating_median_ms", "alternating with the run's second forward"),
                                ("stepwise_median_ms", "alternating, the GPU synchronised before each pair"),
                                ("late_inputs_median_ms", "the run's last forward's inputs, repeated"))
               if key in report),
             "", "| kind | ms | share |", "|---|---|---|"]
    for kind, ms in report["by_kind_ms"].items():
        lines.append(f"| {kind} | {ms:.1f} | {report['by_kind_share'][kind]:.0%} |")
    return "\n".join(lines)
