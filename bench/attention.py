"""Attention kernels at the shapes our models run: ms, TFLOP/s, and error against cuDNN.

    python3 bench/attention.py --out attention.json      # on a GPU

Kernels: SDPA as torch picks, SDPA pinned to cuDNN / flash / memory-efficient,
SageAttention2 (``sageattn``, INT8 QK / FP8 PV) when the ``sageattention`` package is
installed, and FlashAttention-3 when ``flash_attn_3`` is. Also checks that ``sageattn`` compiles inside ``torch.compile(fullgraph=True)``,
since sgld compiles the blocks that call it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (name, batch, heads, tokens): batch 2 where sgld batches the CFG branches.
SHAPES = (
    ("wan13_480p", 2, 12, 32760),
    ("wan14b_720p", 2, 40, 75600),
    ("flux_1024", 1, 24, 4608),
    ("qwen_1024", 2, 24, 4352 + 64),
)


def _sdpa(backend: SDPBackend | None):
    def run(q, k, v):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)
    return run


def kernels() -> dict:
    """The kernels to time, by name (sage only when importable)."""
    found = {"sdpa (torch picks)": _sdpa(None), "cudnn": _sdpa(SDPBackend.CUDNN_ATTENTION),
             "flash": _sdpa(SDPBackend.FLASH_ATTENTION), "efficient": _sdpa(SDPBackend.EFFICIENT_ATTENTION)}
    try:
        from sageattention import sageattn

        found["sage"] = lambda q, k, v: sageattn(q, k, v, tensor_layout="HND")
    except ImportError as exc:
        print(f"sage: not installed ({exc})")
    try:
        from flash_attn_interface import flash_attn_func

        def fa3(q, k, v):
            # FA3 takes (batch, tokens, heads, dim): transposed views, no copies. Some releases return (out, lse).
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)

        found["fa3"] = fa3
    except ImportError as exc:
        print(f"fa3: not installed ({exc})")
    return found


def time_ms(fn, q, k, v, repeats: int = 10) -> float:
    """Mean ms per call over ``repeats`` after 3 warm-ups (CUDA events)."""
    for _ in range(3):
        fn(q, k, v)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(q, k, v)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def compiles_fullgraph(fn, q, k, v) -> str:
    """'ok', or the error, for ``fn`` under torch.compile(fullgraph=True)."""
    try:
        compiled = torch.compile(lambda a, b, c: fn(a, b, c) * 1.0, fullgraph=True)
        compiled(q, k, v)
        torch.cuda.synchronize()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - the error is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def main(argv: list[str] | None = None) -> int:
    """Time every kernel at every shape; print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_attention.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    found = kernels()
    rows = []
    for name, batch, heads, tokens in SHAPES:
        q, k, v = (torch.randn(batch, heads, tokens, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flop = 4 * batch * heads * tokens * tokens * 128
        reference = found["cudnn"](q, k, v).float()
        for kernel, fn in found.items():
            try:
                out = fn(q, k, v).float()
                ms = time_ms(fn, q, k, v, repeats=10 if flop < 50e12 else 3)
            except RuntimeError as exc:
                rows.append({"shape": name, "kernel": kernel, "error": str(exc)[:200]})
                print(f"{name} {kernel}: {str(exc)[:120]}", flush=True)
                continue
            cos = F.cosine_similarity(out.flatten(), reference.flatten(), dim=0).item()
            rel = ((out - reference).norm() / reference.norm()).item()
            row = {"shape": name, "kernel": kernel, "ms": round(ms, 2), "tflops": round(flop / ms / 1e9),
                   "cosine_vs_cudnn": round(cos, 5), "rel_l2_vs_cudnn": round(rel, 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, reference
        torch.cuda.empty_cache()
    meta = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if "sage" in found:
        q, k, v = (torch.randn(1, 12, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        meta["sage_fullgraph_compile"] = compiles_fullgraph(found["sage"], q, k, v)
        print(f"sage under torch.compile(fullgraph=True): {meta['sage_fullgraph_compile']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
