"""LTX-2's sequence-parallel plan: diffusers 0.42.1's ``LTX2VideoTransformer3DModel._cp_plan``, completed.

diffusers' plan splits the video tokens, the text tokens and the video RoPE tables on dim 1, which is the token
axis only for interleaved RoPE ((B, tokens, dim)). LTX-2.0 ships split RoPE, whose tables are (B, heads, tokens,
r): there the plan's rope split is skipped and every video attention fails on mismatched lengths. It also leaves
out the audio<->video cross-attention's video table (``cross_attn_rope``) and image-to-video's per-token
timesteps. This plan splits all of them on their token axis; the audio stream stays whole on every rank (its
attention sees every rank's identical copy of the audio keys, which leaves softmax attention unchanged).
"""

from __future__ import annotations

from typing import Any, Mapping


def ltx2_cp_plan(config: Mapping[str, Any]) -> dict:
    """The context-parallel plan for an ``LTX2VideoTransformer3DModel`` of ``config``."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    split_rope = config.get("rope_type", "interleaved") == "split"
    table = ContextParallelInput(split_dim=2 if split_rope else 1, expected_dims=4 if split_rope else 3,
                                 split_output=True)
    return {
        "": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "encoder_attention_mask": ContextParallelInput(split_dim=1, expected_dims=2, split_output=False),
            # Image-to-video's per-token timesteps (B, tokens); a per-sample one (B,) is left whole.
            "timestep": ContextParallelInput(split_dim=1, expected_dims=2, split_output=False),
        },
        "rope": {0: table, 1: table},
        "cross_attn_rope": {0: table, 1: table},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
