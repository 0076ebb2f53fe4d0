"""FlashAttention-3's FP8 forward as an attention backend (lossy, opt-in): ``--attention-backend fa3_fp8``.

Q, K and V are cast to float8 e4m3 with one scale per (batch row, head), the only granularity FA3's
FP8 kernel takes (``q_descale`` etc., shape (batch, heads)). K is first centred over its tokens, as
SageAttention does before it quantizes: subtracting the same vector from every key adds one constant
to each query's logits, which the softmax removes, and it shrinks K's range, so its e4m3 values lose
less. Inside the kernel the softmax probabilities are FP8 too; the output is bf16.

On a CUDA GPU with an FP8 build of FlashAttention-3 the kernel runs; elsewhere (CPU tests) the same
quantization runs and attention is computed over the dequantized inputs, which is the kernel's math
except for its FP8 probabilities.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys

import torch

# diffusers' name for the backend (registered by sgld.diffusers_patches), and sgld's flag value.
BACKEND_NAME = "sgld_fa3_fp8"
E4M3_MAX = 448.0


def quantize_per_head(x: torch.Tensor, center: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (batch, tokens, heads, dim) as e4m3 values and float32 descales (batch, heads).

    ``center``: subtract the mean over tokens first (for K: the softmax does not see it).
    """
    x = x.float()
    if center:
        x = x - x.mean(dim=1, keepdim=True)
    amax = x.abs().amax(dim=(1, 3))
    scale = (amax / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (x / scale[:, None, :, None]).to(torch.float8_e4m3fn), scale


def dequantize_per_head(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of ``quantize_per_head`` (up to e4m3 rounding), in ``dtype``."""
    return (values.float() * scale[:, None, :, None]).to(dtype)


@torch.library.custom_op("sgld::fa3_fp8_forward", mutates_args=(), device_types="cuda")
def fa3_fp8_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_descale: torch.Tensor,
                    k_descale: torch.Tensor, v_descale: torch.Tensor, softmax_scale: float | None = None,
                    causal: bool = False) -> torch.Tensor:
    """FA3's FP8 forward as a traceable op: e4m3 (B, S, H, D) and float32 descales (B, H) in, bf16 out."""
    from flash_attn_interface import flash_attn_func

    out = flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal,
                          q_descale=q_descale, k_descale=k_descale, v_descale=v_descale)
    return (out[0] if isinstance(out, tuple) else out).contiguous()


@fa3_fp8_forward.register_fake
def _(q, k, v, q_descale, k_descale, v_descale, softmax_scale=None, causal=False):
    return torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)


def fp8_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: torch.Tensor | None = None, scale: float | None = None, is_causal: bool = False,
                  _parallel_config=None) -> torch.Tensor:
    """diffusers' attention call (B, S, H, D) through FA3's FP8 kernel; on CPU, its math over dequantized inputs."""
    if attn_mask is not None:  # FA3 takes no mask (LTX-2's text cross-attention): that call runs exact SDPA
        from sgld.levers.fa3_attention import masked_attention

        return masked_attention(query, key, value, attn_mask, scale, is_causal)
    q8, q_scale = quantize_per_head(query)
    k8, k_scale = quantize_per_head(key, center=True)
    v8, v_scale = quantize_per_head(value)
    if query.is_cuda:
        return fa3_fp8_forward(q8, k8, v8, q_scale, k_scale, v_scale, scale, is_causal).to(query.dtype)
    q, k, v = (dequantize_per_head(t, s, query.dtype).transpose(1, 2)
               for t, s in ((q8, q_scale), (k8, k_scale), (v8, v_scale)))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    return out.transpose(1, 2)


# The probe a child process runs: one small FP8 call on the GPU given as its argument.
_PROBE = """
import sys
import torch
from sgld.levers.fp8_attention import fa3_fp8_forward
torch.cuda.set_device(int(sys.argv[1]))
q = torch.zeros(1, 128, 1, 128, device="cuda").to(torch.float8_e4m3fn)
ones = torch.ones(1, 1, device="cuda")
fa3_fp8_forward(q, q, q, ones, ones, ones)
torch.cuda.synchronize()
"""
REBUILD = "rebuild it with FA3_FP8=1 bash bench/build_fa3.sh, or use --attention-backend sage"


@functools.lru_cache(maxsize=None)
def fa3_fp8_unavailable_reason(device_index: int = 0) -> str | None:
    """Why the installed FlashAttention-3 cannot run its FP8 forward on GPU ``device_index`` (None: it can).

    bench/build_fa3.sh leaves FP8 out unless FA3_FP8=1, and such a build fails on its first FP8 call; a build with
    it has also been seen to crash the process on that call (a segfault, H200, 2026-12-06). So one small call is
    tried in a child process, where a crash cannot take this process (a server) down with it. Once per process.
    """
    return probe_in_child(_PROBE, [str(device_index)], "this FlashAttention-3 build's FP8 forward")


def probe_in_child(script: str, args: list[str], what: str, timeout_s: float = 300.0) -> str | None:
    """Run ``script`` in a fresh Python with this process's import path: None when it exits cleanly, else why
    ``what`` cannot be used (its exception's last line, or the signal that killed it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"{what} did not finish a small call in {timeout_s:.0f} s; {REBUILD}"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "?"
        return f"{what} crashed the process that tried it ({name}); {REBUILD}"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    last = lines[-1][:200] if lines else f"exit status {done.returncode}"
    return f"{what} fails ({last}); {REBUILD}"
