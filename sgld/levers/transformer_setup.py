"""A DiT's speed and memory levers, applied once at load as the run asks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sgld.config.schema import CacheKind, Quantization, RunConfig
from sgld.levers.attention import auto_attention_backend, compiles_fullgraph, set_attention_backend
from sgld.levers.step_hooks import StepHook

log = logging.getLogger(__name__)


@dataclass
class DitSetup:
    """What configuring a DiT leaves: the denoise loop's per-step hooks and the attention backend in effect."""

    hooks: list[StepHook]
    backend: str


def configure_transformer(module: torch.nn.Module, run: RunConfig, device: torch.device,
                          masked_attention: bool = False) -> DitSetup:
    """Quantization, attention backend, step cache and sliding tiles (compile comes last: ``compile_transformer``).

    ``masked_attention``: the model's attention takes a mask (HunyuanVideo's text padding), so
    ``auto`` keeps SDPA (the family refused explicit mask-less backends before loading).
    """
    hooks: list[StepHook] = []
    if run.model.quantization == Quantization.fp8:
        from sgld.levers.fp8 import fp8_matmul_supported, quantize_blocks_fp8

        count = quantize_blocks_fp8(module, device)
        how = "FP8 tensor cores" if fp8_matmul_supported(device) else "dequantized matmuls (no FP8 tensor cores here)"
        log.info("quantization=fp8: %d linear layers of %s in e4m3, run with %s", count, type(module).__name__, how)
    backend = run.model.attention_backend.value
    if backend == "auto" and not masked_attention:
        backend = auto_attention_backend(device, run.parallel.sp_size or 1)
    backend = set_attention_backend(module, backend, device)
    if run.model.cache != CacheKind.none:
        from sgld.levers.step_cache import enable_step_cache

        hooks.append(enable_step_cache(module, run.model.cache.value, run.model.cache_threshold))
    if run.model.mask_strategy_file_path:
        from sgld.levers.sliding_tile import enable_sliding_tile_attention

        hooks.append(enable_sliding_tile_attention(module, run.model.mask_strategy_file_path))
    return DitSetup(hooks, backend)


def compile_transformer(module: torch.nn.Module, backend: str, sequence_parallel: bool = False) -> None:
    """Regional compile of the repeated blocks, after everything that changes the modules (LoRA layers).

    ``sequence_parallel``: the blocks hold all-to-alls; Inductor is asked to move them early, over
    independent compute (the projections of the other inputs, FLUX's parallel MLP).
    """
    if sequence_parallel:
        import torch._inductor.config as inductor

        inductor.reorder_for_compute_comm_overlap = True
    module.compile_repeated_blocks(fullgraph=compiles_fullgraph(backend))
