"""Rotary embeddings given as complex numbers, computed in real arithmetic inside compiled blocks so Inductor fuses them.

diffusers applies Qwen-Image's and Z-Image's RoPE as a complex multiplication (Q and K to fp32, viewed as complex,
times ``e^{iθ}``, back). Inductor generates no code for complex operators ("Torchinductor does not support code
generation for complex operators", printed when such a block compiles): those products run as separate eager
kernels with fp32 copies of Q and K between them — for Qwen-Image at 1024², about 0.5 GB of memory traffic a block
and branch (an estimate; the measurement is in docs/performance.md's "Still to measure"). The same product written
with cosines and sines, ``(a, b) e^{iθ} = (a cos θ − b sin θ, a sin θ + b cos θ)`` in fp32, is plain arithmetic
that Inductor fuses into one kernel per tensor. Eager forwards keep diffusers' complex path (fewer kernels there),
so an uncompiled run is diffusers' own arithmetic; a compiled one differs from it by fp32 rounding only. Qwen-Image's
QK norm and RoPE can go further, into one Triton pass per tensor (``sgld.levers.qk_norm_rope``, on the devices in
``FUSED_DEVICES``: CUDA, where it is measured faster than Inductor's kernel).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers import transformer_qwenimage as qwen
from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

from sgld.levers.qk_norm_rope import qk_norm_rope, rotate_real

# Devices whose compiled Qwen-Image blocks run the QK norm + RoPE as ``sgld::qk_norm_rope``: CUDA, where its Triton
# kernel moves the image queries at 1.14 TB/s against Inductor's 0.85 (H100, docs/performance.md, seventh session).
# Elsewhere Inductor's own kernel is as good (the op's CPU form is plain PyTorch). The tests count the CPU in to run
# the wiring.
FUSED_DEVICES: tuple[str, ...] = ("cuda",)


def rotate_pairs(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """``x``'s consecutive pairs of the last dimension times the complex ``freqs_cis`` (broadcast against the pairs),
    in real fp32 arithmetic; in ``x``'s dtype."""
    return rotate_real(x, torch.view_as_real(freqs_cis))


def apply_rotary_emb_qwen(x: torch.Tensor, freqs_cis: torch.Tensor, use_real: bool = False) -> torch.Tensor:
    """diffusers' ``apply_rotary_emb_qwen`` for (B, S, H, D) ``x`` and complex (S, D/2) ``freqs_cis``: its own code
    when eager, the same product in real arithmetic while compiling."""
    if use_real or not torch.compiler.is_compiling():
        return qwen.apply_rotary_emb_qwen(x, freqs_cis, use_real=use_real)
    return rotate_pairs(x, freqs_cis.unsqueeze(1))  # one rotation per position, every head


class RealRopeQwenProcessor(qwen.QwenDoubleStreamAttnProcessor2_0):
    """diffusers' Qwen-Image joint-attention processor (diffusers 0.42.1's ``__call__`` restated) whose QK norm and
    RoPE compile to fused arithmetic: the norm then the real-arithmetic rotation, or one ``sgld::qk_norm_rope`` pass
    per tensor on the devices in ``FUSED_DEVICES``. Eager, it is diffusers' arithmetic."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is None:
            raise ValueError("QwenDoubleStreamAttnProcessor2_0 requires encoder_hidden_states (text stream)")
        if attention_mask is not None:
            raise ValueError("QwenDoubleStreamAttnProcessor2_0 does not accept an external attention_mask; pass "
                             "encoder_hidden_states_mask to let the processor build the joint mask.")
        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            attention_mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]
        seq_txt = encoder_hidden_states.shape[1]
        head_dim = attn.inner_dim // attn.heads  # heads per rank may be fewer (tensor parallel): -1 absorbs them
        img_query, img_key, img_value = (proj(hidden_states).unflatten(-1, (-1, head_dim))
                                         for proj in (attn.to_q, attn.to_k, attn.to_v))
        txt_query, txt_key, txt_value = (proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
                                         for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        norms = (attn.norm_q, attn.norm_k, attn.norm_added_q, attn.norm_added_k)
        if image_rotary_emb is not None and _fuses_norm_and_rope(norms, hidden_states):
            img_angles, txt_angles = (torch.view_as_real(freqs) for freqs in image_rotary_emb)
            img_query, img_key, txt_query, txt_key = (
                qk_norm_rope(x, norm.weight, angles, norm.eps) for x, norm, angles in
                zip((img_query, img_key, txt_query, txt_key), norms, (img_angles, img_angles, txt_angles, txt_angles)))
        else:
            img_query, img_key, txt_query, txt_key = (
                x if norm is None else norm(x) for x, norm in zip((img_query, img_key, txt_query, txt_key), norms))
            if image_rotary_emb is not None:
                img_freqs, txt_freqs = image_rotary_emb
                img_query, img_key = (apply_rotary_emb_qwen(x, img_freqs) for x in (img_query, img_key))
                txt_query, txt_key = (apply_rotary_emb_qwen(x, txt_freqs) for x in (txt_query, txt_key))
        joint_query = torch.cat([txt_query, img_query], dim=1)  # [text, image], as diffusers orders them
        joint_key = torch.cat([txt_key, img_key], dim=1)
        joint_value = torch.cat([txt_value, img_value], dim=1)
        joint = dispatch_attention_fn(joint_query, joint_key, joint_value, attn_mask=attention_mask, dropout_p=0.0,
                                      is_causal=False, backend=self._attention_backend,
                                      parallel_config=self._parallel_config)
        joint = joint.flatten(2, 3).to(joint_query.dtype)
        img_output = attn.to_out[0](joint[:, seq_txt:, :].contiguous())
        if len(attn.to_out) > 1:  # dropout
            img_output = attn.to_out[1](img_output)
        return img_output, attn.to_add_out(joint[:, :seq_txt, :].contiguous())


def _fuses_norm_and_rope(norms: tuple, hidden_states: torch.Tensor) -> bool:
    """Whether this compiled forward runs the QK norms and RoPE as ``sgld::qk_norm_rope``: while compiling, on a
    device in ``FUSED_DEVICES``, with all four norms diffusers' weighted, bias-free ``RMSNorm``."""
    return (torch.compiler.is_compiling() and hidden_states.device.type in FUSED_DEVICES
            and all(type(norm) is RMSNorm and norm.weight is not None and norm.bias is None for norm in norms))


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


REPLACEMENTS = {qwen.QwenDoubleStreamAttnProcessor2_0: RealRopeQwenProcessor,
                 ZSingleStreamAttnProcessor: RealRopeZImageProcessor}


def use_real_rope(transformer: torch.nn.Module) -> int:
    """Give each of ``transformer``'s diffusers attention processors with a complex RoPE (Qwen-Image's, Z-Image's)
    the real-arithmetic one; returns how many were replaced. Install before the attention backend is chosen: the
    backend is set on the processors."""
    replaced = 0
    for module in transformer.modules():
        replacement = REPLACEMENTS.get(type(getattr(module, "processor", None)))
        if replacement is not None:
            module.set_processor(replacement())
            replaced += 1
    return replaced
