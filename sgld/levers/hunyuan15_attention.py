"""HunyuanVideo-1.5 attention without a dense mask when no text token is padding.

diffusers' processor always builds a (batch, 1, L, L) boolean mask from the text mask (2.4 GB
per sample at 480p, 121 frames) and hands it to SDPA, which then cannot use its flash kernels:
the DiT ran at 22% MFU on an H200. sgld gives the DiT each prompt's real tokens only (no
padding: ``Hunyuan15TextEncodingStage`` trims it), so for a forward whose text mask is all true
the mask changes nothing and is dropped; attention then runs the backend's fastest kernel.
A forward with padding (requests of different prompt lengths sharing a batch) keeps diffusers'
masked path. The check runs once per forward, outside the compiled blocks (one host sync).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0


class MaskFreeHunyuan15Processor(HunyuanVideo15AttnProcessor2_0):
    """diffusers' processor, with the mask left out while ``mask_free`` is set (every text token real)."""

    def __init__(self):
        super().__init__()
        self.mask_free = False

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if not self.mask_free:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        # As diffusers' processor (QKV, QK norm, RoPE on the video stream, joint attention), with no mask.
        query = attn.to_q(hidden_states).unflatten(2, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if encoder_hidden_states is not None:
            encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            if attn.norm_added_q is not None:
                encoder_query = attn.norm_added_q(encoder_query)
            if attn.norm_added_k is not None:
                encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)
        hidden_states = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                              backend=self._attention_backend, parallel_config=self._parallel_config)
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states, None
        split = hidden_states.shape[1] - encoder_hidden_states.shape[1]
        hidden_states, encoder_hidden_states = hidden_states[:, :split], hidden_states[:, split:]
        if getattr(attn, "to_out", None) is not None:
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if getattr(attn, "to_add_out", None) is not None:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def enable_mask_free_attention(transformer: torch.nn.Module) -> list[MaskFreeHunyuan15Processor]:
    """Give every block's attention the mask-free processor, switched per forward by the text masks.

    Returns the processors. Install before the attention backend is chosen: the backend is set on
    the processors the blocks hold.
    """
    processors = []
    for block in transformer.transformer_blocks:
        processor = MaskFreeHunyuan15Processor()
        block.attn.set_processor(processor)
        processors.append(processor)

    def switch(module, args, kwargs):
        masks = [kwargs.get(name) for name in ("encoder_attention_mask", "encoder_attention_mask_2")]
        image = kwargs.get("image_embeds")
        # Zero vision tokens (text-to-video) are masked out by the DiT: mask-free only when there are none.
        no_vision_padding = image is None or image.shape[1] == 0 or not bool((image == 0).all())
        mask_free = no_vision_padding and all(mask is None or bool(mask.bool().all()) for mask in masks)
        for processor in processors:
            processor.mask_free = mask_free

    transformer.register_forward_pre_hook(switch, with_kwargs=True)
    return processors
