"""Adjust (derive unset values) and validate a RunConfig before any process starts."""

from __future__ import annotations

from sgld.config.schema import ATTENTION_BACKENDS, CACHE_KINDS, PRECISIONS, QUANTIZATIONS, RunConfig
from sgld.errors import ConfigError


def adjust(run: RunConfig) -> None:
    """Derive unset parallel degrees from the given ones (SGLang's rules)."""
    par = run.parallel
    cfg_degree = 2 if par.enable_cfg_parallel else 1
    u, r = par.ulysses_degree, par.ring_degree
    if par.sp_size is None:
        if u is None and r is None:
            par.sp_size = max(par.num_gpus // cfg_degree, 1)
        else:
            par.sp_size = (u or 1) * (r or 1)
    if u is None and r is None:
        u, r = par.sp_size, 1
    elif u is None:
        u = par.sp_size // r if r and par.sp_size % r == 0 else 1
    elif r is None:
        r = par.sp_size // u if u and par.sp_size % u == 0 else 1
    par.ulysses_degree, par.ring_degree = u, r


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}", param=key)


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}", param=key)


def validate(run: RunConfig) -> None:
    """Raise ConfigError for values no model can run; model-specific checks come later."""
    _check_choice("model.precision", run.model.precision, PRECISIONS)
    _check_choice("vae.precision", run.vae.precision, PRECISIONS)
    _check_choice("model.image_encoder_precision", run.model.image_encoder_precision, PRECISIONS)
    for i, p in enumerate(run.model.text_encoder_precisions):
        _check_choice(f"model.text_encoder_precisions[{i}]", p, PRECISIONS)
    _check_choice("model.attention_backend", run.model.attention_backend, ATTENTION_BACKENDS)
    _check_choice("model.cache", run.model.cache, CACHE_KINDS)
    _check_choice("model.quantization", run.model.quantization, QUANTIZATIONS)
    if run.model.cache != "none" and run.model.enable_torch_compile:
        raise ConfigError("model.cache and model.enable_torch_compile cannot be combined: diffusers' cache hooks "
                          "do not compile; choose one", param="model.cache")
    if not 0 < run.model.cache_threshold < 1:
        raise ConfigError(f"model.cache_threshold must be between 0 and 1, got {run.model.cache_threshold}",
                          param="model.cache_threshold")
    if run.model.mask_strategy_file_path and run.model.enable_torch_compile:
        raise ConfigError("model.mask_strategy_file_path and model.enable_torch_compile cannot be combined: the "
                          "sliding-tile windows change per step and layer outside the compiled blocks; choose one",
                          param="model.mask_strategy_file_path")
    if not run.vae.load_decoder:
        raise ConfigError("vae.load_decoder=false leaves no decoder to turn latents into frames", param="vae.load_decoder")
    for key in ("tile_sample_min_height", "tile_sample_min_width"):
        value = getattr(run.vae, key)
        if value is not None and (value < 32 or value % 8):
            raise ConfigError(f"vae.{key} must be a multiple of 8 and >= 32, got {value}", param=f"vae.{key}")

    s = run.sampling
    _check_positive("sampling.num_inference_steps", s.num_inference_steps)
    for key in ("height", "width"):
        if getattr(s, key) is not None:
            _check_positive(f"sampling.{key}", getattr(s, key))
    _check_positive("sampling.num_frames", s.num_frames)
    _check_positive("sampling.fps", s.fps)
    _check_positive("output.num_outputs_per_prompt", run.output.num_outputs_per_prompt)
    if s.guidance_scale < 0:
        raise ConfigError(f"sampling.guidance_scale must be >= 0, got {s.guidance_scale}", param="sampling.guidance_scale")
    if not 0 <= s.seed < 2**63:
        raise ConfigError(f"sampling.seed must be in [0, 2**63), got {s.seed}", param="sampling.seed")

    _validate_parallel(run)


def _validate_parallel(run: RunConfig) -> None:
    par = run.parallel
    for key in ("num_gpus", "tp_size", "sp_size", "ulysses_degree", "ring_degree"):
        _check_positive(f"parallel.{key}", getattr(par, key))
    if par.ulysses_degree * par.ring_degree != par.sp_size:
        raise ConfigError(
            f"parallel.ulysses_degree ({par.ulysses_degree}) x parallel.ring_degree ({par.ring_degree}) "
            f"must equal parallel.sp_size ({par.sp_size})",
            param="parallel.sp_size",
        )
    cfg_degree = 2 if par.enable_cfg_parallel else 1
    used = par.sp_size * cfg_degree
    if used > par.num_gpus:
        raise ConfigError(
            f"parallel.sp_size ({par.sp_size}) x cfg degree ({cfg_degree}) = {used} is more than "
            f"parallel.num_gpus ({par.num_gpus})",
            param="parallel.num_gpus",
        )
    if used < par.num_gpus:
        raise ConfigError(
            f"parallel.sp_size ({par.sp_size}) x cfg degree ({cfg_degree}) = {used} would leave "
            f"{par.num_gpus - used} of parallel.num_gpus ({par.num_gpus}) idle; set sp_size to "
            f"{par.num_gpus // cfg_degree} or num_gpus to {used}",
            param="parallel.sp_size",
        )
    if par.sp_size > 1 and run.model.enable_torch_compile:
        # Measured on 4xH200 (bench/scaling.py, FLUX Ulysses-4): dynamo fails inside diffusers'
        # context-parallel hooks, on every rank, after the weights load.
        raise ConfigError(
            f"model.enable_torch_compile cannot be combined with sequence parallelism (sp_size={par.sp_size}) yet: "
            "torch.compile fails inside the context-parallel hooks; choose one",
            param="model.enable_torch_compile",
        )
    if par.sp_size > 1 and run.model.attention_backend in ("sage", "fa3"):
        raise ConfigError(
            f"model.attention_backend={run.model.attention_backend} is not verified with sequence parallelism "
            f"(sp_size={par.sp_size}); use auto (cuDNN/flash through the parallel attention paths)",
            param="model.attention_backend",
        )
    if run.offload.dit_layerwise and (run.offload.dit or run.model.enable_torch_compile or par.sp_size > 1
                                      or run.model.cache != "none" or run.model.quantization != "none"):
        other = ("offload.dit (whole-model DiT offload)" if run.offload.dit else
                 "model.enable_torch_compile" if run.model.enable_torch_compile else
                 f"model.cache={run.model.cache}" if run.model.cache != "none" else
                 f"model.quantization={run.model.quantization}" if run.model.quantization != "none" else
                 f"sp_size={par.sp_size}")
        raise ConfigError(f"offload.dit_layerwise cannot be combined with {other}: the block hooks that copy "
                          "weights in are not verified with it; choose one", param="offload.dit_layerwise")
    if par.tp_size > par.num_gpus or par.num_gpus % par.tp_size:
        raise ConfigError(
            f"parallel.tp_size ({par.tp_size}) must divide parallel.num_gpus ({par.num_gpus})",
            param="parallel.tp_size",
        )
    if par.tp_size > 1 and run.offload.text_encoder:
        raise ConfigError(
            "parallel.tp_size > 1 cannot be combined with offload.text_encoder (--text-encoder-cpu-offload): "
            "the offloaded encoder runs on the CPU, where layer-wise offload with prefetch is faster than "
            "sharding it; choose one",
            param="parallel.tp_size",
        )
