"""Attention kernels at the shapes our models run: ms, TFLOP/s, and error against cuDNN.

    python3 bench/attention.py --out attention.json      # on a GPU

Kernels: SDPA as torch picks, SDPA pinned to cuDNN / flash / memory-efficient,
SageAttention2 (``sageattn``, INT8 QK / FP8 PV) when the ``sageattention`` package is
installed, FlashAttention-3 when ``flash_attn_3`` is, and its FP8 forward when that build has it. Also checks that ``sageattn`` compiles inside ``torch.compile(fullgraph=True)``,
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sgld, for its fa3_fp8 backend

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
        found.update(fp8_kernels())
    except ImportError as exc:
        print(f"fa3: not installed ({exc})")
    return found


def fp8_kernels() -> dict:
    """FA3's FP8 forward (when this FA3 build has it): the kernel alone on inputs quantized once, and
    sgld's ``fa3_fp8`` backend as the model calls it (quantize + kernel, compiled as in a compiled block)."""
    from sgld.levers.fp8_attention import fa3_fp8_forward, fa3_fp8_unavailable_reason, fp8_attention, quantize_per_head

    reason = fa3_fp8_unavailable_reason()
    if reason:
        print(f"fa3 fp8: {reason}")
        return {}
    cache: dict = {}

    def kernel_only(q, k, v):
        key = (q.data_ptr(), k.data_ptr(), v.data_ptr())
        if cache.get("key") != key:  # quantized once per input set: the timed calls run the kernel alone
            q8, k8, v8 = (quantize_per_head(t.transpose(1, 2), center=t is k) for t in (q, k, v))
            cache.update(key=key, args=(q8[0], k8[0], v8[0], q8[1], k8[1], v8[1]))
        return fa3_fp8_forward(*cache["args"]).transpose(1, 2)

    compiled = torch.compile(fp8_attention, fullgraph=True)
    return {"fa3 fp8 (kernel only)": kernel_only,
            "fa3 fp8 (sgld backend: quantize + kernel, compiled)":
                lambda q, k, v: compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)}


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
