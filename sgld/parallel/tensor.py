"""Tensor parallelism for T5/UMT5 text encoders (``tp_size``), with torch.distributed.tensor.parallel.

Attention projections q/k/v and the feed-forward input projections are split by columns
(each rank computes its own heads / hidden units), ``o`` and ``wo`` by rows (their partial
sums are all-reduced), and the per-layer relative position bias by heads. Each rank's
attention then runs over its own heads, so the module's head count is divided too.
"""

from __future__ import annotations

import logging

import torch

from sgld.errors import UserError

log = logging.getLogger(__name__)


def _t5_plan(block, tp: int) -> dict:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    attn = block.layer[0].SelfAttention
    if attn.n_heads % tp:
        raise UserError(f"tp_size={tp} must divide the text encoder's {attn.n_heads} attention heads", param="tp_size")
    plan = {f"layer.0.SelfAttention.{name}": ColwiseParallel() for name in ("q", "k", "v")}
    plan["layer.0.SelfAttention.o"] = RowwiseParallel()
    if getattr(attn, "has_relative_attention_bias", False):
        plan["layer.0.SelfAttention.relative_attention_bias"] = ColwiseParallel(input_layouts=Replicate(),
                                                                                output_layouts=Shard(-1))
    ff = block.layer[-1].DenseReluDense
    for name in ("wi", "wi_0", "wi_1"):
        if hasattr(ff, name):
            plan[f"layer.{len(block.layer) - 1}.DenseReluDense.{name}"] = ColwiseParallel()
    plan[f"layer.{len(block.layer) - 1}.DenseReluDense.wo"] = RowwiseParallel()
    return plan


def is_t5(encoder: torch.nn.Module) -> bool:
    """Whether ``encoder`` is a T5/UMT5 encoder (the kind sgld splits over ranks)."""
    blocks = getattr(getattr(encoder, "encoder", None), "block", None)
    return blocks is not None and hasattr(blocks[0].layer[0], "SelfAttention")


def shard_text_encoders(components: dict, tp_mesh, is_main: bool) -> None:
    """``tp_size`` > 1: split each T5/UMT5 text encoder over the ranks of ``tp_mesh``. Other encoders (Mistral3,
    Qwen, Llama, CLIP) stay whole on every rank, which runs the same model with more memory (logged once)."""
    for name in ("text_encoder", "text_encoder_2"):
        module = components.get(name)
        if module is None:
            continue
        if is_t5(module):
            shard_text_encoder(module, tp_mesh)
        elif is_main and not type(module).__name__.startswith("CLIP"):  # FLUX's 123M CLIP is whole by design
            log.info("tp_size=%d: %s stays whole on every rank (sgld splits T5/UMT5 text encoders only)",
                     tp_mesh.size(), type(module).__name__)


def shard_text_encoder(encoder: torch.nn.Module, tp_mesh) -> None:
    """Split a T5/UMT5 encoder's layers over the ranks of ``tp_mesh``; other encoder types raise UserError."""
    from torch.distributed.tensor.parallel import parallelize_module

    if not is_t5(encoder):
        raise UserError(f"tp_size > 1 shards T5/UMT5 text encoders; {type(encoder).__name__} is not one",
                        param="tp_size")
    blocks = encoder.encoder.block
    tp = tp_mesh.size()
    for block in blocks:
        parallelize_module(block, tp_mesh, _t5_plan(block, tp))
        attn = block.layer[0].SelfAttention
        attn.n_heads //= tp
        attn.inner_dim //= tp
