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


def fa3_fp8_unavailable_reason() -> str | None:
    """Why the installed FlashAttention-3 has no FP8 forward (None: it has one).

    bench/build_fa3.sh leaves FP8 out unless FA3_FP8=1; such a build fails on its first FP8 call,
    so one small call tells.
    """
    q = torch.zeros(1, 128, 1, 128, device="cuda").to(torch.float8_e4m3fn)
    ones = torch.ones(1, 1, device="cuda")
    try:
        fa3_fp8_forward(q, q, q, ones, ones, ones)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means the backend cannot run
        return f"this FlashAttention-3 build has no FP8 forward ({str(exc).splitlines()[0][:160]}); rebuild it " \
               "with FA3_FP8=1 bash bench/build_fa3.sh"
    return None
