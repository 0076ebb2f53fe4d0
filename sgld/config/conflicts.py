"""Settings that cannot be combined: one table of (setting, setting, reason) rows, checked before any process starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sgld.config.cache import uses_cache_dit, uses_step_cache, uses_teacache
from sgld.config.schema import UNVERIFIED_SP_BACKENDS, CacheKind, DitOffload, Quantization, RunConfig
from sgld.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """A condition on a run, the config key it is about, and how a message names it."""

    key: str
    holds: Callable[[RunConfig], bool]
    describe: Callable[[RunConfig], str]


def _switch(key: str, holds: Callable[[RunConfig], bool], text: str = "") -> Setting:
    return Setting(key, holds, lambda run: text or key)


def _choice(key: str, value_of: Callable[[RunConfig], object], off: object) -> Setting:
    """A choice key set to anything but ``off``; named with its value (``model.cache=first_block``)."""
    return Setting(key, lambda run: value_of(run) != off, lambda run: f"{key}={value_of(run)}")


COMPILE = _switch("model.enable_torch_compile", lambda run: run.model.enable_torch_compile)
CUDA_GRAPHS = _switch("model.cuda_graphs", lambda run: run.model.cuda_graphs)
DIT_MOVES = Setting("offload.dit", lambda run: run.offload.dit not in (None, DitOffload.none),
                    lambda run: f"offload.dit={run.offload.dit}")
SEQUENCE_PARALLEL = Setting("parallel.sp_size", lambda run: (run.parallel.sp_size or 1) > 1,
                            lambda run: f"sequence parallelism (sp_size={run.parallel.sp_size})")
LAYERWISE = _switch("offload.dit", lambda run: run.offload.dit == DitOffload.layerwise, "offload.dit=layerwise")
FIRST_BLOCK = _switch("cache.kind", lambda run: run.cache.kind == CacheKind.first_block, "cache.kind=first_block")
STEP_CACHE = Setting("cache.kind", uses_step_cache, lambda run: "a step cache (" + ", ".join(
    name for name, on in (("cache.kind=first_block", run.cache.kind == CacheKind.first_block),
                          ("Cache-DiT", uses_cache_dit(run)), ("TeaCache", uses_teacache(run))) if on) + ")")
TEACACHE = _switch("sampling.enable_teacache", uses_teacache, "TeaCache")
CACHE_DIT_LOADED = _switch("cache.kind", lambda run: run.cache.kind == CacheKind.cache_dit, "cache.kind=cache_dit")
# A request turning Cache-DiT on where the run did not mount it at load (the run's kind is not cache_dit).
LATE_CACHE_DIT = _switch("sampling.enable_cache_dit",
                         lambda run: uses_cache_dit(run) and run.cache.kind != CacheKind.cache_dit,
                         "Cache-DiT for a request of a run started without it (cache.kind is not cache_dit)")
QUANTIZED = _choice("model.quantization", lambda run: run.model.quantization, Quantization.none)
OPTIONAL_ATTENTION = Setting("model.attention_backend", lambda run: run.model.attention_backend in UNVERIFIED_SP_BACKENDS,
                             lambda run: f"model.attention_backend={run.model.attention_backend}")
SLIDING_TILES = _switch("model.mask_strategy_file_path", lambda run: bool(run.model.mask_strategy_file_path))
LORAS = _switch("model.loras", lambda run: bool(run.model.loras) or bool(run.server.lora_dir),
                "LoRA adapters (model.loras / server.lora_dir)")
LORA_SWITCHING = _switch("server.lora_dir", lambda run: bool(run.server.lora_dir) or run.model.lora_merge_mode == "dynamic",
                         "switchable LoRA adapters (server.lora_dir or model.lora_merge_mode=dynamic)")
LORA_MERGED = _switch("model.lora_merge_mode", lambda run: run.model.lora_merge_mode == "merge" and LORAS.holds(run),
                      "model.lora_merge_mode=merge")
GGUF_DIT = _switch("model.dit_weights", lambda run: bool(run.model.dit_weights), "a GGUF DiT (model.dit_weights)")
TEXT_ENCODER_TP = _switch("parallel.tp_size", lambda run: run.parallel.tp_size > 1, "parallel.tp_size > 1")
TEXT_ENCODER_OFFLOAD = _switch("offload.text_encoder", lambda run: run.offload.text_encoder,
                               "offload.text_encoder (--text-encoder-cpu-offload)")

_UNVERIFIED_LAYERWISE = "the block hooks that copy weights in are not verified with it"

# (first, second, reason): the message names the first setting's key as the one to change.
CONFLICTS: tuple[tuple[Setting, Setting, str], ...] = (
    (FIRST_BLOCK, COMPILE, "diffusers' cache hooks do not compile"),
    (TEACACHE, CACHE_DIT_LOADED, "cache-dit's wrappers, mounted at load, replace the block lists TeaCache wraps; run "
                                 "TeaCache on a run started without --cache cache_dit"),
    # cache-dit's block wrappers must go on before the context-parallel hooks (cache-dit's rule).
    (LATE_CACHE_DIT, SEQUENCE_PARALLEL, "cache-dit's block wrappers go on before the context-parallel hooks, at load; "
                                        "start the run with --cache cache_dit (requests may still turn it off)"),
    (SLIDING_TILES, COMPILE, "the sliding-tile windows change per step and layer outside the compiled blocks"),
    (OPTIONAL_ATTENTION, SEQUENCE_PARALLEL,
     "attention_backend={value} is not verified with sequence parallelism; use auto (the parallel attention "
     "runs FlashAttention-3 where it is installed, else cuDNN)"),
    (LAYERWISE, COMPILE, _UNVERIFIED_LAYERWISE),
    (LAYERWISE, SEQUENCE_PARALLEL, _UNVERIFIED_LAYERWISE),
    (LAYERWISE, STEP_CACHE, _UNVERIFIED_LAYERWISE),
    (LAYERWISE, QUANTIZED, _UNVERIFIED_LAYERWISE),
    (LORAS, QUANTIZED, "PEFT's adapter layers wrap bf16 linear layers, not sgld's FP8 ones"),
    (LORAS, LAYERWISE, _UNVERIFIED_LAYERWISE),
    # A GGUF DiT's linear layers hold packed blocks (GGUFLinear dequantizes them as it runs).
    (QUANTIZED, GGUF_DIT, "the GGUF DiT is quantized already; fp8 replaces plain linear layers, not GGUF ones"),
    (LORA_MERGED, GGUF_DIT, "merging adds each adapter's delta into the weights, which would dequantize every GGUF "
                            "layer it touches to full size; use lora_merge_mode=dynamic (auto is dynamic with a GGUF DiT)"),
    # A captured graph reads the weights and activations at the addresses it was captured with, and
    # replays the kernels it saw: whatever moves weights or changes the forward's path between calls breaks it.
    (CUDA_GRAPHS, DIT_MOVES, "a graph replays reads of the weights where they were at capture; offloading moves them"),
    (CUDA_GRAPHS, STEP_CACHE, "the cache decides per step which blocks run, a graph replays all it captured"),
    (CUDA_GRAPHS, SLIDING_TILES, "the sliding-tile windows change per step and layer"),
    (CUDA_GRAPHS, LORAS, "switching, merging or unmerging adapters changes the forward's path, which a graph does not see"),
    # Measured on 2 H200s (FLUX ring-2, compiled): the ranks hung at the capture; the timed run never finished.
    (CUDA_GRAPHS, SEQUENCE_PARALLEL, "capturing the forward with its collectives hung on 2 H200s (not supported)"),
    (CUDA_GRAPHS, GGUF_DIT, "capturing GGUF layers' per-call dequantization is not verified on a GPU yet"),
    (TEXT_ENCODER_TP, TEXT_ENCODER_OFFLOAD,
     "the offloaded encoder runs on the CPU, where layer-wise offload with prefetch is faster than sharding it"),
)


def check_conflicts(run: RunConfig) -> None:
    """Raise ConfigError for the first row of CONFLICTS whose two settings both hold, naming both and why."""
    for first, second, reason in CONFLICTS:
        if first.holds(run) and second.holds(run):
            why = reason.format(value=run.model.attention_backend)
            raise ConfigError(f"{first.describe(run)} cannot be combined with {second.describe(run)}: {why}; "
                              "choose one", param=first.key)
