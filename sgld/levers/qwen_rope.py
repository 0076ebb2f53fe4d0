"""Qwen-Image's rotary embedding in real arithmetic inside compiled blocks, so Inductor fuses it.

diffusers applies Qwen-Image's RoPE as a complex multiplication (``apply_rotary_emb_qwen(..., use_real=False)``:
Q and K to fp32, viewed as complex, times ``e^{iθ}``, back). Inductor generates no code for complex operators
("Torchinductor does not support code generation for complex operators", printed when a Qwen-Image block
compiles): the four products of every block run as separate eager kernels with fp32 copies of Q and K between
them, about 0.5 GB of memory traffic a block and branch at 1024² (an estimate; the measurement is in
docs/performance.md's "Still to measure"). The same product written with cosines and sines — ``(a, b) e^{iθ} =
(a cos θ − b sin θ, a sin θ + b cos θ)`` in fp32 — is plain arithmetic Inductor fuses into one kernel per tensor.
Eager forwards keep diffusers' complex path (fewer kernels there), so an uncompiled run is diffusers' own
arithmetic; a compiled one differs from it by fp32 rounding only.
"""

from __future__ import annotations

import types

import torch
from diffusers.models.transformers import transformer_qwenimage as qwen


def apply_rotary_emb_qwen(x: torch.Tensor, freqs_cis: torch.Tensor, use_real: bool = False) -> torch.Tensor:
    """diffusers' ``apply_rotary_emb_qwen`` for (B, S, H, D) ``x`` and complex (S, D/2) ``freqs_cis``: its own code
    when eager, the same product in real fp32 arithmetic while compiling."""
    if use_real or not torch.compiler.is_compiling():
        return qwen.apply_rotary_emb_qwen(x, freqs_cis, use_real=use_real)
    return rotate_real(x, freqs_cis)


def rotate_real(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """``x``'s consecutive pairs times the complex (S, D/2) ``freqs_cis``, in real fp32 arithmetic."""
    freqs = torch.view_as_real(freqs_cis).unsqueeze(1)  # (S, 1, D/2, 2): one rotation per pair, every head
    cos, sin = freqs[..., 0], freqs[..., 1]
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # the pairs diffusers views as complex numbers
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).type_as(x)


def _with_real_rope(function: types.FunctionType) -> types.FunctionType:
    """``function`` (a diffusers processor's ``__call__``) resolving ``apply_rotary_emb_qwen`` to the one above.

    A copy of the function object with its own globals, not a copy of its source: the processor's ~90 lines stay
    diffusers' (masks, tensor-parallel head counts, the attention dispatch), and diffusers' module is untouched, so a
    reference pipeline in the same process keeps its own arithmetic."""
    namespace = {**function.__globals__, "apply_rotary_emb_qwen": apply_rotary_emb_qwen}
    return types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                              function.__closure__)


class RealRopeQwenProcessor(qwen.QwenDoubleStreamAttnProcessor2_0):
    """diffusers' Qwen-Image joint-attention processor whose RoPE compiles to fused real arithmetic."""

    __call__ = _with_real_rope(qwen.QwenDoubleStreamAttnProcessor2_0.__call__)


def use_real_rope(transformer: torch.nn.Module) -> int:
    """Give each of ``transformer``'s diffusers Qwen-Image attention processors the real-arithmetic RoPE; returns how
    many were replaced. Install before the attention backend is chosen: the backend is set on the processors."""
    replaced = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if type(processor) is qwen.QwenDoubleStreamAttnProcessor2_0:
            module.set_processor(RealRopeQwenProcessor())
            replaced += 1
    return replaced
