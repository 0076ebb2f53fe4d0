"""Sequence parallelism (USP: Ulysses x ring) for the DiT, through diffusers' context parallelism.

diffusers 0.42 ships the pieces we need: per-model plans (``_cp_plan``) that shard the
token sequence after the patch embedding and gather it at ``proj_out`` for Wan, FLUX and
Qwen-Image, Ulysses all-to-all and ring attention with log-sum-exp merging. We give it
our device mesh and fill the gaps that stop it on CPU/gloo: it derives the device from
``torch.accelerator.device_count()`` (0 on CPU; overridden while parallelism is enabled), its
native SDPA op returns no log-sum-exp, which ring attention needs (``lse_attention_op`` uses
ATen's kernels that do: flash on CPU; on CUDA cuDNN, else flash, else memory-efficient), and
its gather of uneven shards sends unequal messages, which gloo refuses (``pad_gather_anything``).
The last two replace diffusers internals: ``sgld.diffusers_patches`` installs them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from sgld.errors import UserError
from sgld.parallel.state import ParallelState


@contextmanager
def _cpu_as_one_device() -> Iterator[None]:
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def _cudnn_with_lse(q, k, v, dropout_p, is_causal, scale):
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, dropout_p, is_causal, False,
                                                                  scale=scale)[:2]
    return out, lse.reshape(q.shape[0], q.shape[1], q.shape[2])  # cuDNN's stats come as (B, H, S, 1)


def _flash_with_lse(q, k, v, dropout_p, is_causal, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[:2]


def _efficient_with_lse(q, k, v, dropout_p, is_causal, scale):
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, dropout_p, is_causal,
                                                                       scale=scale)[:2]
    return out, lse[:, :, : q.shape[2]]  # the kernel pads the LSE's sequence dim to a multiple of 32


# CUDA kernels that return the log-sum-exp, fastest first on Hopper (cuDNN ~600 TFLOP/s at our shapes,
# FA2 ~350); the first that runs for a dtype is kept. Memory-efficient takes any dtype.
_CUDA_LSE_KERNELS = (_cudnn_with_lse, _flash_with_lse, _efficient_with_lse)
_chosen_cuda_kernel: dict = {}


def _attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, is_causal: bool,
                        scale) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA that also returns the log-sum-exp; (B, H, S, D) in, (out (B, H, S, D), lse (B, H, S)) out."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, scale=scale)
    return run_first_working(_CUDA_LSE_KERNELS, _chosen_cuda_kernel, (q.dtype, q.shape[-1]),
                             q, k, v, dropout_p, is_causal, scale)


def run_first_working(kernels, chosen: dict, key, *args):
    """Call the kernel remembered for ``key``, else the first of ``kernels`` that runs (and remember it)."""
    if key in chosen:
        return chosen[key](*args)
    for kernel in kernels:
        try:
            result = kernel(*args)
        except RuntimeError:  # not built for this GPU / dtype / head size: try the next
            continue
        chosen[key] = kernel
        return result
    raise RuntimeError(f"no attention kernel with log-sum-exp runs {key}")


def lse_attention_op(original):
    """diffusers' native attention op, extended to return the log-sum-exp (ring attention merges partial results
    with it); installed by ``sgld.diffusers_patches``."""

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        if not return_lse or attn_mask is not None or enable_gqa:
            return original(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
                            _save_ctx, _parallel_config)
        q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))  # (B, S, H, D) -> (B, H, S, D)
        out, lse = _attention_with_lse(q, k, v, dropout_p, is_causal, scale)
        return out.permute(0, 2, 1, 3), lse.permute(0, 2, 1)  # model layout: (B, S, H, D), (B, S, H)

    return forward_op


def pad_gather_anything(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    """All-gather shards of different lengths along ``dim`` with equal-sized messages (gloo needs them; NCCL is fine with them too)."""
    import torch.distributed as dist

    tensor = tensor.contiguous()
    world = dist.get_world_size(group=group)
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[dim]], device=tensor.device), group=group)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    pad = list(tensor.shape)
    pad[dim] = longest - tensor.shape[dim]
    padded = torch.cat([tensor, tensor.new_zeros(pad)], dim=dim) if pad[dim] else tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)


def enable_sequence_parallel(transformer: torch.nn.Module, state: ParallelState) -> None:
    """Shard ``transformer``'s token sequence over the run's ring x Ulysses ranks."""
    from diffusers import ContextParallelConfig

    if not getattr(transformer, "_cp_plan", None):
        raise UserError(f"{type(transformer).__name__} has no sequence-parallel plan; use sp_size=1",
                        param="sp_size")
    heads = transformer.config.num_attention_heads
    if heads % state.ulysses_degree:
        raise UserError(f"ulysses_degree={state.ulysses_degree} must divide the model's {heads} attention heads",
                        param="ulysses_degree")
    # Token counts that do not split evenly (odd latent grids, Qwen prompts of any length) need
    # diffusers' "anything" modes; they exist for pure Ulysses and pure ring.
    config = ContextParallelConfig(ring_degree=state.ring_degree, ulysses_degree=state.ulysses_degree,
                                   mesh=state.mesh["ring", "ulysses"],
                                   ulysses_anything=state.ring_degree == 1, ring_anything=state.ulysses_degree == 1)
    if state.device.type == "cpu":
        with _cpu_as_one_device():
            transformer.enable_parallelism(config=config)
    else:
        transformer.enable_parallelism(config=config)
