"""Sequence parallelism (USP: Ulysses x ring) for the DiT, through diffusers' context parallelism.

diffusers 0.42 ships the pieces we need: per-model plans (``_cp_plan``) that shard the
token sequence after the patch embedding and gather it at ``proj_out`` for Wan, FLUX and
Qwen-Image, Ulysses all-to-all and ring attention with log-sum-exp merging. We give it
our device mesh and fill the gaps that stop it on CPU/gloo: it derives the device from
``torch.accelerator.device_count()`` (0 on CPU; overridden while parallelism is enabled), its
native SDPA op returns no log-sum-exp, which ring attention needs (``lse_attention_op`` uses
kernels that do: ATen's flash on CPU; on CUDA FA3 where installed, else cuDNN, flash, memory-efficient), and
its gather of uneven shards sends unequal messages, which gloo refuses (``pad_gather_anything``).
The last two replace diffusers internals: ``sgld.diffusers_patches`` installs them.

On CUDA the same op runs every unmasked attention of a sequence-parallel forward (Ulysses' too) on
the fastest exact kernel that runs: FlashAttention-3 where it is installed (its log-sum-exp serves
ring attention), else cuDNN. The kernel is chosen once, when parallelism is enabled, so compiled
blocks trace a fixed kernel.

Layouts per forward: diffusers' plain (equipartition) modes compile; its "anything" modes, which
split uneven sequences, exchange shard sizes through the process group, which dynamo cannot
trace. So each forward picks the plain mode when every sequence the plan splits divides evenly
over the ranks (the usual sizes), and the "anything" mode otherwise, run uncompiled
(``ShardLayoutHooks``).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterator

import torch

from sgld.errors import UserError
from sgld.levers.attention import optional_backend_unavailable_reason
from sgld.parallel.state import ParallelState

log = logging.getLogger(__name__)


@contextmanager
def _cpu_as_one_device() -> Iterator[None]:
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


@torch.library.custom_op("sgld::fa3_forward", mutates_args=(), device_types="cuda")
def fa3_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
                causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention-3's forward as a traceable op: (B, S, H, D) in; out (B, S, H, D) and fp32 lse (B, H, S).

    Our own registration: diffusers' op declares its log-sum-exp as (B, S, H) in the input's dtype
    while the kernel returns a transposed fp32 tensor, which compiled code asserts against.
    """
    from flash_attn_interface import flash_attn_func

    out, lse = flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal, return_attn_probs=True)[:2]
    return out.contiguous(), lse.contiguous()


@fa3_forward.register_fake
def _(q, k, v, softmax_scale=None, causal=False):
    batch, seq, heads, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((batch, heads, seq), dtype=torch.float32)


def _fa3_with_lse(q, k, v, dropout_p, is_causal, scale):
    """FlashAttention-3 (Hopper only; faster than cuDNN at our shapes, docs/performance.md); offered where it can run."""
    if dropout_p:
        raise RuntimeError("FlashAttention-3's forward has no dropout")
    out, lse = fa3_forward(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, is_causal)
    return out.transpose(1, 2), lse  # (B, H, S, D) and (B, H, S), as the other kernels


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


# CUDA kernels that return the log-sum-exp, fastest first on Hopper (FA3, cuDNN, FA2, memory-efficient, as
# bench/attention.py measured them: docs/performance.md); the first that runs for a dtype and head size is kept. Memory-efficient takes any dtype.
_CUDA_LSE_KERNELS = (_fa3_with_lse, _cudnn_with_lse, _flash_with_lse, _efficient_with_lse)
_chosen_cuda_kernel: dict = {}


def _cuda_lse_kernels(device: torch.device) -> tuple:
    fa3_runs = optional_backend_unavailable_reason("fa3", device) is None  # the same test as --attention-backend fa3
    return _CUDA_LSE_KERNELS if fa3_runs else _CUDA_LSE_KERNELS[1:]


def _attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, is_causal: bool,
                        scale) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA that also returns the log-sum-exp; (B, H, S, D) in, (out (B, H, S, D), lse (B, H, S)) out."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, scale=scale)
    key = (q.dtype, q.shape[-1])
    if key in _chosen_cuda_kernel:  # chosen before any trace (choose_attention_kernel)
        return _chosen_cuda_kernel[key](q, k, v, dropout_p, is_causal, scale)
    return run_first_working(_cuda_lse_kernels(q.device), _chosen_cuda_kernel, key, q, k, v, dropout_p, is_causal, scale)


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


def choose_attention_kernel(device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """Pick (and remember) the CUDA kernel for ``dtype`` and ``head_dim`` with a small eager call; its name.

    Done before any compiled block traces the op, so the trace sees one fixed kernel.
    """
    if device.type != "cuda":
        return "sdpa"
    x = torch.zeros(1, 1, 128, head_dim, device=device, dtype=dtype)
    run_first_working(_cuda_lse_kernels(device), _chosen_cuda_kernel, (dtype, head_dim), x, x, x, 0.0, False, None)
    return _chosen_cuda_kernel[(dtype, head_dim)].__name__.removeprefix("_").removesuffix("_with_lse")


def lse_attention_op(original):
    """diffusers' native attention op for sequence-parallel forwards; installed by ``sgld.diffusers_patches``.

    It returns the log-sum-exp when asked (ring attention merges partial results with it), and on
    CUDA runs unmasked attention on the chosen kernel (``choose_attention_kernel``).
    """

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        ours = attn_mask is None and not enable_gqa and (return_lse or query.device.type == "cuda")
        if not ours:
            return original(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
                            _save_ctx, _parallel_config)
        q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))  # (B, S, H, D) -> (B, H, S, D)
        out, lse = _attention_with_lse(q, k, v, dropout_p, is_causal, scale)
        out = out.permute(0, 2, 1, 3)  # model layout: (B, S, H, D), (B, S, H)
        return (out, lse.permute(0, 2, 1)) if return_lse else out

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


def _plan_splits(plan: dict, name: str) -> bool:
    return any(isinstance(entry, dict) and name in entry for entry in plan.values())


def split_sequence_lengths(transformer: torch.nn.Module, args: tuple, kwargs: dict) -> list[int]:
    """The lengths of the sequences a forward's plan splits: the latent's tokens, and the text's if it is split."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    if hidden.dim() == 5:  # a video latent (B, C, F, H, W): tokens after the patch embedding
        tokens = math.prod(n // p for n, p in zip(hidden.shape[2:], transformer.config.patch_size))
    else:  # packed tokens (B, S, C)
        tokens = hidden.shape[1]
    lengths = [tokens]
    text = kwargs.get("encoder_hidden_states")
    if text is not None and _plan_splits(transformer._cp_plan, "encoder_hidden_states"):
        lengths.append(text.shape[1])
    return lengths


class ShardLayoutHooks:
    """Forward hooks that pick diffusers' plain or "anything" split mode for each forward (see the module doc).

    An uneven forward runs with ``torch.compiler`` set to eager, so compiled blocks are not retraced
    into the untraceable mode; with both Ulysses and ring there is no uneven mode, so it is refused.
    """

    def __init__(self, transformer: torch.nn.Module, config, state: ParallelState):
        self.transformer, self.config, self.state = transformer, config, state
        self._eager = None
        self._told: set[tuple[int, ...]] = set()

    def before(self, module, args, kwargs):
        lengths = tuple(split_sequence_lengths(self.transformer, args, kwargs))
        ranks = self.state.ring_degree * self.state.ulysses_degree
        even = all(n % ranks == 0 for n in lengths)
        if not even and self.state.ring_degree > 1 and self.state.ulysses_degree > 1:
            raise UserError(f"this size gives sequences of {' and '.join(map(str, lengths))} tokens, which do not "
                            f"split evenly over ulysses_degree x ring_degree = {ranks} ranks (uneven shards need pure "
                            "Ulysses or pure ring); choose a height/width whose token count divides", param="sp_size")
        self.config.ulysses_anything = not even and self.state.ring_degree == 1
        self.config.ring_anything = not even and self.state.ulysses_degree == 1
        if not even:
            if lengths not in self._told:
                self._told.add(lengths)
                log.info("sequence lengths %s do not split evenly over %d ranks: these forwards run uneven shards, "
                         "uncompiled", lengths, ranks)
            self._eager = torch.compiler.set_stance("force_eager")  # set now; undone in after()

    def after(self, module, args, kwargs, output):
        if self._eager is not None:
            self._eager.__exit__(None, None, None)
            self._eager = None


def _resolve_hook_signatures(transformer: torch.nn.Module) -> None:
    """Fill each split hook's parameter positions now, eagerly.

    A hook on a repeated block (Wan's ``blocks.0``, Qwen-Image's ``transformer_blocks.*``) runs inside
    the compiled block; on its first call it reads the block's signature with ``inspect``, which dynamo
    cannot trace.
    """
    import inspect

    from diffusers.hooks.context_parallel import ContextParallelSplitHook

    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in getattr(registry, "hooks", {}).values():
            metadata = getattr(hook, "module_forward_metadata", None)
            if isinstance(hook, ContextParallelSplitHook) and metadata is not None and metadata._cls is not None:
                names = list(inspect.signature(metadata._cls.forward).parameters)[1:]  # without self
                metadata.cached_parameter_indices = {name: i for i, name in enumerate(names)}


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
    # Token counts that do not split evenly (odd latent grids, Qwen prompts of any length) switch
    # each forward to diffusers' "anything" modes (ShardLayoutHooks); they exist for pure Ulysses and pure ring.
    config = ContextParallelConfig(ring_degree=state.ring_degree, ulysses_degree=state.ulysses_degree,
                                   mesh=state.mesh["ring", "ulysses"])
    if state.device.type == "cpu":
        with _cpu_as_one_device():
            transformer.enable_parallelism(config=config)
    else:
        transformer.enable_parallelism(config=config)
    _resolve_hook_signatures(transformer)
    layout = ShardLayoutHooks(transformer, config, state)
    transformer.register_forward_pre_hook(layout.before, with_kwargs=True, prepend=True)
    transformer.register_forward_hook(layout.after, with_kwargs=True, always_call=True)
    kernel = choose_attention_kernel(state.device, transformer.dtype, transformer.config.attention_head_dim)
    log.info("sequence-parallel attention runs on %s", kernel)
