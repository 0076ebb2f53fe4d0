"""Rotary embeddings given as complex numbers, computed in real arithmetic inside compiled blocks so Inductor fuses them.

diffusers applies Qwen-Image's and Z-Image's RoPE as a complex multiplication (Q and K to fp32, viewed as complex,
times ``e^{iθ}``, back). Inductor generates no code for complex operators ("Torchinductor does not support code
generation for complex operators", printed when such a block compiles): those products run as separate eager
kernels with fp32 copies of Q and K between them — for Qwen-Image at 1024², about 0.5 GB of memory traffic a block
and branch (an estimate; the measurement is in docs/performance.md's "Still to measure"). The same product written
with cosines and sines, ``(a, b) e^{iθ} = (a cos θ − b sin θ, a sin θ + b cos θ)`` in fp32, is plain arithmetic
that Inductor fuses into one kernel per tensor. Eager forwards keep diffusers' complex path (fewer kernels there),
so an uncompiled run is diffusers' own arithmetic; a compiled one differs from it by fp32 rounding only.
"""

from __future__ import annotations

import types

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers import transformer_qwenimage as qwen
from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor


def rotate_pairs(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """``x``'s consecutive pairs of the last dimension times the complex ``freqs_cis`` (broadcast against the pairs),
    in real fp32 arithmetic; in ``x``'s dtype."""
    freqs = torch.view_as_real(freqs_cis)
    cos, sin = freqs[..., 0], freqs[..., 1]
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # the pairs diffusers views as complex numbers
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)


def apply_rotary_emb_qwen(x: torch.Tensor, freqs_cis: torch.Tensor, use_real: bool = False) -> torch.Tensor:
    """diffusers' ``apply_rotary_emb_qwen`` for (B, S, H, D) ``x`` and complex (S, D/2) ``freqs_cis``: its own code
    when eager, the same product in real arithmetic while compiling."""
    if use_real or not torch.compiler.is_compiling():
        return qwen.apply_rotary_emb_qwen(x, freqs_cis, use_real=use_real)
    return rotate_pairs(x, freqs_cis.unsqueeze(1))  # one rotation per position, every head


def _with_real_rope(function: types.FunctionType) -> types.FunctionType:
    """``function`` (a diffusers processor's ``__call__``) resolving ``apply_rotary_emb_qwen`` to the one above.

    A copy of the function object with its own globals, not a copy of its source: the processor's ~90 lines stay
    diffusers' (masks, tensor-parallel head counts, the attention dispatch), and diffusers' module is untouched, so a
    reference pipeline in the same process keeps its own arithmetic. The globals are those at import: a later patch
    of that module's names (``sgld/diffusers_patches.py`` patches none of them) would not reach this copy."""
    namespace = {**function.__globals__, "apply_rotary_emb_qwen": apply_rotary_emb_qwen}
    return types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                              function.__closure__)


class RealRopeQwenProcessor(qwen.QwenDoubleStreamAttnProcessor2_0):
    """diffusers' Qwen-Image joint-attention processor whose RoPE compiles to fused real arithmetic."""

    __call__ = _with_real_rope(qwen.QwenDoubleStreamAttnProcessor2_0.__call__)


class RealRopeZImageProcessor(ZSingleStreamAttnProcessor):
    """diffusers' Z-Image attention processor (diffusers 0.42.1's ``__call__``, its RoPE a local function there, so
    restated here) whose RoPE compiles to fused real arithmetic."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
        query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if freqs_cis is not None:
            query, key = _z_image_rope(query, freqs_cis), _z_image_rope(key, freqs_cis)
        if attention_mask is not None and attention_mask.ndim == 2:
            attention_mask = attention_mask[:, None, None, :]
        hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                              is_causal=False, backend=self._attention_backend,
                                              parallel_config=self._parallel_config)
        output = attn.to_out[0](hidden_states.flatten(2, 3).to(query.dtype))
        if len(attn.to_out) > 1:  # dropout
            output = attn.to_out[1](output)
        return output


def _z_image_rope(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Z-Image's RoPE for (B, S, H, D) ``x`` and complex (B, S, D/2) ``freqs_cis``, as diffusers computes it when
    eager (fp32, autocast off), in real arithmetic while compiling."""
    with torch.amp.autocast("cuda", enabled=False):
        if torch.compiler.is_compiling():
            return rotate_pairs(x, freqs_cis.unsqueeze(2))
        rotated = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2)) * freqs_cis.unsqueeze(2)
        return torch.view_as_real(rotated).flatten(3).type_as(x)


_REPLACEMENTS = {qwen.QwenDoubleStreamAttnProcessor2_0: RealRopeQwenProcessor,
                 ZSingleStreamAttnProcessor: RealRopeZImageProcessor}


def use_real_rope(transformer: torch.nn.Module) -> int:
    """Give each of ``transformer``'s diffusers attention processors with a complex RoPE (Qwen-Image's, Z-Image's)
    the real-arithmetic one; returns how many were replaced. Install before the attention backend is chosen: the
    backend is set on the processors."""
    replaced = 0
    for module in transformer.modules():
        replacement = _REPLACEMENTS.get(type(getattr(module, "processor", None)))
        if replacement is not None:
            module.set_processor(replacement())
            replaced += 1
    return replaced
