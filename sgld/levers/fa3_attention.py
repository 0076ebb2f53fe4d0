"""FlashAttention-3 as sgld's ``--attention-backend fa3`` (and auto's choice on Hopper): exact, and it takes masks.

FA3 takes no attention mask, so diffusers' ``_flash_3`` backend refuses any call that passes one. Some DiTs
mask a cross-attention (LTX-2: its padded Gemma prompt tokens), and the whole model then failed on FA3. Here a
masked call runs PyTorch's SDPA (exact, as diffusers' default backend runs it) and every unmasked call, nearly
all of a step's attention time (self-attention over the video tokens), runs FA3.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import _flash_attention_3, _native_attention

# diffusers' name for the backend (registered by sgld.diffusers_patches).
BACKEND_NAME = "sgld_fa3"


def masked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor,
                     scale: float | None = None, is_causal: bool = False) -> torch.Tensor:
    """A masked attention call (B, S, H, D) through SDPA: what the kernels without mask support hand over."""
    return _native_attention(query, key, value, attn_mask=attn_mask, scale=scale, is_causal=is_causal)


def fa3_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: torch.Tensor | None = None, scale: float | None = None, is_causal: bool = False,
                  _parallel_config=None) -> torch.Tensor:
    """diffusers' attention call (B, S, H, D) through FA3; a masked one through SDPA."""
    if attn_mask is not None:
        return masked_attention(query, key, value, attn_mask, scale, is_causal)
    return _flash_attention_3(query, key, value, scale=scale, is_causal=is_causal)
