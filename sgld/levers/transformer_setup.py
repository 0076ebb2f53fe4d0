"""A DiT's speed and memory levers, applied once at load as the run asks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sgld.config.schema import CacheKind, Quantization, RunConfig
from sgld.levers.attention import auto_attention_backend, compiles_fullgraph, set_attention_backend
from sgld.levers.fused_gelu import fuse_gelu_projections
from sgld.levers.shared_modulation import shared_modulation_hook
from sgld.levers.step_hooks import StepHook

log = logging.getLogger(__name__)


@dataclass
class DitSetup:
    """What configuring a DiT leaves: the denoise loop's per-step hooks and the attention backend in effect."""

    hooks: list[StepHook]
    backend: str


def configure_transformer(module: torch.nn.Module, run: RunConfig, device: torch.device,
                          masked_attention: bool = False, family: str = "", expert: str = "transformer") -> DitSetup:
    """Fused GELU projections, shared modulation, quantization, attention backend, step caches and sliding tiles
    (compile comes last: ``compile_transformer``).

    ``masked_attention``: the model's attention takes a mask (HunyuanVideo's text padding), so
    ``auto`` keeps SDPA (the family refused explicit mask-less backends before loading). ``family`` (the
    FamilySpec's name) says which per-request step caches the DiT takes; ``expert`` is the DiT's component name
    (Wan2.2's low-noise ``transformer_2`` takes SGLang's secondary Cache-DiT settings).
    """
    hooks: list[StepHook] = []
    fused = fuse_gelu_projections(module, device)
    if fused:
        log.debug("%d tanh-GELU projections of %s fused into their GEMMs on CUDA", fused, type(module).__name__)
    shared = shared_modulation_hook(module, run)
    if shared is not None:
        hooks.append(shared)
    if run.model.quantization == Quantization.fp8:
        from sgld.levers.fp8 import fp8_matmul_supported, quantize_blocks_fp8

        count = quantize_blocks_fp8(module, device)
        how = "FP8 tensor cores" if fp8_matmul_supported(device) else "dequantized matmuls (no FP8 tensor cores here)"
        log.info("quantization=fp8: %d linear layers of %s in e4m3, run with %s", count, type(module).__name__, how)
    backend = run.model.attention_backend.value
    if backend == "auto" and not masked_attention:
        backend = auto_attention_backend(device, run.parallel.sp_size or 1)
    backend = set_attention_backend(module, backend, device)
    hooks += step_cache_hooks(module, run, family, expert)
    if run.model.mask_strategy_file_path:
        from sgld.levers.sliding_tile import enable_sliding_tile_attention

        hooks.append(enable_sliding_tile_attention(module, run.model.mask_strategy_file_path))
    return DitSetup(hooks, backend)


def step_cache_hooks(module: torch.nn.Module, run: RunConfig, family: str, expert: str) -> list[StepHook]:
    """The run's first_block cache; else the Cache-DiT and TeaCache hooks the family takes, idle until a request
    (or the run's default) turns them on. Cache-DiT is mounted now where it is the default: cache-dit's wrappers go
    on before compile and the context-parallel hooks."""
    kind = run.cache.kind
    if kind == CacheKind.first_block:
        from sgld.levers.step_cache import enable_step_cache

        return [enable_step_cache(module, kind.value, run.cache.first_block_threshold)]
    from sgld.cache_support import CACHE_DIT_FAMILIES, TEACACHE_FAMILIES, check_family

    check_family(family, kind == CacheKind.cache_dit, kind == CacheKind.teacache)
    hooks: list[StepHook] = []
    if family in CACHE_DIT_FAMILIES:
        from sgld.config.cache_dit import env_settings, file_settings
        from sgld.levers.cache_dit import CacheDitHook

        secondary = expert == "transformer_2"
        base = file_settings(run.cache.cache_dit_config) if run.cache.cache_dit_config else env_settings(
            secondary=secondary)
        hooks.append(CacheDitHook(module, base, kind == CacheKind.cache_dit, cfg_parallel=run.parallel.enable_cfg_parallel,
                                  secondary=secondary, mount_now=kind == CacheKind.cache_dit))
    if family in TEACACHE_FAMILIES:
        from sgld.levers.teacache import TeaCacheHook

        hooks.append(TeaCacheHook(module, kind == CacheKind.teacache, run.cache.teacache_thresh))
    return hooks


def compile_transformer(module: torch.nn.Module, backend: str, sequence_parallel: bool = False) -> None:
    """Regional compile of the repeated blocks, after everything that changes the modules (LoRA layers).

    ``sequence_parallel``: the blocks hold all-to-alls; Inductor is asked to move them early, over
    independent compute (the projections of the other inputs, FLUX's parallel MLP).
    """
    if sequence_parallel:
        import torch._inductor.config as inductor

        inductor.reorder_for_compute_comm_overlap = True
    module.compile_repeated_blocks(fullgraph=compiles_fullgraph(backend))
