"""Qwen-Image's QK RMSNorm and RoPE as one pass over the queries or keys (one Triton kernel on CUDA).

Each of Qwen-Image's 60 blocks normalizes its image and text queries and keys per head (diffusers' ``RMSNorm``) and
then rotates them (the complex RoPE, real arithmetic under compile: ``sgld.levers.real_rope``). Compiled, Inductor
makes one kernel of the two for each tensor, but it moves the image stream's queries or keys (4096 × 24 × 128 bf16
at 1024², 25 MB read and 25 MB written) at about 1 TB/s, 6 ms of a 124 ms forward on an H100
(docs/performance.md). The kernel here reads each head's row once, normalizes it, rotates its pairs and writes it
once, with diffusers' roundings (the normalized row rounded to the weight's dtype, the weighted row rounded again,
the rotation in fp32); it is a custom op, so Inductor calls it as it is. Off CUDA, or without Triton, the op is the
same arithmetic in PyTorch. The Qwen-Image processor calls it on the devices in ``sgld.levers.real_rope.FUSED_DEVICES``
(CUDA: on an H100 it takes 44 µs for one branch's image queries against Inductor's 59, and equals diffusers' eager
arithmetic in all but 274 of 12.6 M elements where Inductor's kernel differs in 40%, by one bf16 rounding).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the op runs its PyTorch form
    triton = None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """diffusers' ``RMSNorm.forward`` with a half-precision weight and no bias."""
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x * torch.rsqrt(variance + eps)).to(weight.dtype) * weight


def rotate_real(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """``x``'s consecutive pairs of the last dimension rotated by ``angles`` (cosine and sine in its last dimension,
    the rest broadcast against the pairs), in fp32 arithmetic; in ``x``'s dtype."""
    cos, sin = angles[..., 0], angles[..., 1]
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # the pairs diffusers views as complex numbers
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)


@torch.library.custom_op("sgld::qk_norm_rope", mutates_args=())
def qk_norm_rope(x: torch.Tensor, weight: torch.Tensor, angles: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of (B, S, H, D) ``x`` with ``weight``, then each position's pairs rotated by
    ``angles`` ((S, D/2, 2) fp32: ``torch.view_as_real`` of diffusers' complex rotations)."""
    if x.is_cuda and triton is not None and _kernel_takes(x, weight, angles):
        return _fused(x, weight, angles, eps)
    return rotate_real(rms_norm(x, weight, eps), angles.unsqueeze(1))  # one rotation per position, every head


@qk_norm_rope.register_fake
def _qk_norm_rope_shape(x: torch.Tensor, weight: torch.Tensor, angles: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(x)


def _kernel_takes(x: torch.Tensor, weight: torch.Tensor, angles: torch.Tensor) -> bool:
    dim = x.shape[-1]
    return (x.dim() == 4 and x.is_contiguous() and dim & (dim - 1) == 0 and 16 <= dim <= 256
            and weight.dtype == x.dtype == torch.bfloat16 and angles.dtype == torch.float32
            and angles.is_contiguous() and tuple(angles.shape) == (x.shape[1], dim // 2, 2))


if triton is not None:
    @triton.jit
    def _norm_rope_kernel(x_ptr, w_ptr, angle_ptr, out_ptr, rows, heads, seq, eps,
                          D: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = row < rows
        col = tl.arange(0, D)
        x = tl.load(x_ptr + row[:, None] * D + col[None, :], mask=live[:, None], other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
        weight = tl.load(w_ptr + col).to(tl.float32)
        normed = (x * inv[:, None]).to(tl.bfloat16, fp_downcast_rounding="rtne").to(tl.float32) * weight[None, :]
        normed = normed.to(tl.bfloat16, fp_downcast_rounding="rtne").to(tl.float32)
        a, b = tl.split(tl.reshape(normed, (BLOCK, HALF, 2)))
        pair = (((row // heads) % seq) * HALF)[:, None] + tl.arange(0, HALF)[None, :]
        cos = tl.load(angle_ptr + 2 * pair, mask=live[:, None], other=0.0)
        sin = tl.load(angle_ptr + 2 * pair + 1, mask=live[:, None], other=0.0)
        out = tl.reshape(tl.join(a * cos - b * sin, a * sin + b * cos), (BLOCK, D))
        tl.store(out_ptr + row[:, None] * D + col[None, :], out.to(tl.bfloat16, fp_downcast_rounding="rtne"),
                 mask=live[:, None])


def _fused(x: torch.Tensor, weight: torch.Tensor, angles: torch.Tensor, eps: float, block: int = 16) -> torch.Tensor:
    batch, seq, heads, dim = x.shape
    out = torch.empty_like(x)
    rows = batch * seq * heads
    _norm_rope_kernel[(triton.cdiv(rows, block),)](x, weight, angles, out, rows, heads, seq, eps,
                                                  D=dim, HALF=dim // 2, BLOCK=block)
    return out
