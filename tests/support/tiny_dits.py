"""Tiny DiTs built in memory for tests of a lever on the bare transformer (no pipeline, no folder)."""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel


def tiny_qwen_image_dit(num_layers: int = 2, zero_cond_t: bool = False) -> QwenImageTransformer2DModel:
    """A seeded Qwen-Image DiT: 2 heads of 16, 24-wide text input, 2×2 patches of 4 latent channels."""
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                       axes_dims_rope=(4, 6, 6), zero_cond_t=zero_cond_t).eval()
