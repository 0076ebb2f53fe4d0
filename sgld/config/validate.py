"""Adjust (derive unset values) and validate a RunConfig before any process starts."""

from __future__ import annotations

from sgld.config.cache import check_cache, resolve_kind
from sgld.config.conflicts import check_conflicts
from sgld.config.finishing import check_finishing
from sgld.config.finite import check_finite
from sgld.config.schema import RunConfig
from sgld.errors import ConfigError


def warmup_size_options(text: str) -> dict[str, int]:
    """``"1024x768"`` -> width and height; ``"832x480x81"`` -> with num_frames; a ConfigError naming a bad one."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) not in (2, 3) or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"server.warmup_sizes: {text!r} is not a size; write WIDTHxHEIGHT (1024x1024) or "
                          "WIDTHxHEIGHTxFRAMES for video (832x480x81)", param="server.warmup_sizes")
    options = {"width": int(parts[0]), "height": int(parts[1])}
    if len(parts) == 3:
        options["num_frames"] = int(parts[2])
    return options


def group_gpus(run: RunConfig) -> int:
    """GPUs of one engine: ``num_gpus`` split over ``dp_size`` data-parallel workers (serve)."""
    par = run.parallel
    return max(par.num_gpus // max(par.dp_size, 1), 1)


def adjust(run: RunConfig) -> None:
    """Derive unset parallel degrees from the given ones (SGLang's rules), per data-parallel worker; the cache kind."""
    par = run.parallel
    cfg_degree = 2 if par.enable_cfg_parallel else 1
    u, r = par.ulysses_degree, par.ring_degree
    if par.sp_size is None:
        if u is None and r is None:
            par.sp_size = max(group_gpus(run) // cfg_degree, 1)
        else:
            par.sp_size = (u or 1) * (r or 1)
    if u is None and r is None:
        u, r = par.sp_size, 1
    elif u is None:
        u = par.sp_size // r if r and par.sp_size % r == 0 else 1
    elif r is None:
        r = par.sp_size // u if u and par.sp_size % u == 0 else 1
    par.ulysses_degree, par.ring_degree = u, r
    resolve_kind(run)


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}", param=key)


def _check_pixels(height: int | None, width: int | None, max_pixels: int) -> None:
    """One pixel limit for every door: ``server.max_pixels`` bounds the server's sizes and the CLI's alike.

    Far past it the latents alone overflow memory or int64 sizes, after the whole load (a 100000x100000
    request ran 22 s into OverflowError).
    """
    if height is not None and width is not None and height * width > max_pixels:
        raise ConfigError(f"size {width}x{height} (--width x --height) is {width * height} pixels; the limit is "
                          f"{max_pixels} (server.max_pixels)", param="sampling.height")


def _check_output_quality(run: RunConfig) -> None:
    compression = run.output.compression
    if compression is not None and not 0 <= compression <= 100:
        raise ConfigError(f"output.compression must be between 0 and 100, got {compression}", param="output.compression")


def validate(run: RunConfig) -> None:
    """Raise ConfigError for values no model can run; model-specific checks come later."""
    check_finite(run)  # first: NaN passes every range check below
    check_cache(run)
    check_finishing(run)
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
    _check_pixels(s.height, s.width, run.server.max_pixels)
    _check_positive("sampling.num_frames", s.num_frames)
    _check_positive("sampling.fps", s.fps)
    _check_positive("output.num_outputs_per_prompt", run.output.num_outputs_per_prompt)
    _check_output_quality(run)
    _check_positive("sampling.batch_size", s.batch_size)
    _check_positive("server.max_batch_size", run.server.max_batch_size)
    _check_positive("server.batch_max_pixels", run.server.batch_max_pixels)
    if run.server.batch_wait_ms < 0:
        raise ConfigError(f"server.batch_wait_ms must be >= 0, got {run.server.batch_wait_ms}", param="server.batch_wait_ms")
    _check_positive("server.max_attempts", run.server.max_attempts)
    _check_positive("server.replicas_on_host", run.server.replicas_on_host)
    if run.server.torch_threads is not None:
        _check_positive("server.torch_threads", run.server.torch_threads)
    for key in ("lease_s", "drain_s"):
        value = getattr(run.server, key)
        if value < (0 if key == "drain_s" else 1):
            raise ConfigError(f"server.{key} must be {'>= 0' if key == 'drain_s' else '>= 1'} seconds, got {value}",
                              param=f"server.{key}")
    if run.server.retention_s is not None and run.server.retention_s <= 0:
        raise ConfigError(f"server.retention_s must be > 0 seconds (or unset: keep), got {run.server.retention_s}",
                          param="server.retention_s")
    if run.server.image_retention_s <= 0:
        raise ConfigError(f"server.image_retention_s must be > 0 seconds, got {run.server.image_retention_s}",
                          param="server.image_retention_s")
    for size in run.server.warmup_sizes or ():
        warmup_size_options(size)
    store = run.server.job_store
    if store and not store.startswith(("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite:///")):
        scheme = store.split("://", 1)[0] if "://" in store else store[:20]
        raise ConfigError(f"server.job_store: {scheme!r} is not a job store sgld knows; give a postgresql:// URL "
                          "(or sqlite:///path)", param="server.job_store")
    if s.guidance_scale < 0:
        raise ConfigError(f"sampling.guidance_scale must be >= 0, got {s.guidance_scale}", param="sampling.guidance_scale")
    if s.audio_guidance_scale is not None and s.audio_guidance_scale < 0:
        raise ConfigError(f"sampling.audio_guidance_scale must be >= 0, got {s.audio_guidance_scale}",
                          param="sampling.audio_guidance_scale")
    _check_av_guidance(run)
    if not 0 <= s.seed < 2**63:
        raise ConfigError(f"sampling.seed must be in [0, 2**63), got {s.seed}", param="sampling.seed")

    _validate_parallel(run)
    check_conflicts(run)


def _check_av_guidance(run: RunConfig) -> None:
    """LTX-2's guidance terms: scales and rescales >= 0, STG blocks block indexes."""
    terms = run.model.sampling_defaults.av_guidance
    for name in ("stg_scale", "audio_stg_scale", "modality_scale", "audio_modality_scale", "guidance_rescale",
                 "audio_guidance_rescale"):
        if getattr(terms, name) < 0:
            key = f"model.sampling_defaults.av_guidance.{name}"
            raise ConfigError(f"{key} must be >= 0, got {getattr(terms, name)}", param=key)
    if any(block < 0 for block in terms.stg_blocks):
        key = "model.sampling_defaults.av_guidance.stg_blocks"
        raise ConfigError(f"{key} are block indexes (>= 0), got {list(terms.stg_blocks)}", param=key)


def _validate_parallel(run: RunConfig) -> None:
    par = run.parallel
    for key in ("num_gpus", "tp_size", "sp_size", "ulysses_degree", "ring_degree", "dp_size"):
        _check_positive(f"parallel.{key}", getattr(par, key))
    if par.num_gpus % par.dp_size:
        raise ConfigError(f"parallel.dp_size ({par.dp_size}) must divide parallel.num_gpus ({par.num_gpus}): each "
                          "engine worker gets num_gpus / dp_size GPUs", param="parallel.dp_size")
    if par.first_gpu < 0:
        raise ConfigError(f"parallel.first_gpu must be >= 0, got {par.first_gpu}", param="parallel.first_gpu")
    group = group_gpus(run)
    if par.ulysses_degree * par.ring_degree != par.sp_size:
        raise ConfigError(
            f"parallel.ulysses_degree ({par.ulysses_degree}) x parallel.ring_degree ({par.ring_degree}) "
            f"must equal parallel.sp_size ({par.sp_size})",
            param="parallel.sp_size",
        )
    cfg_degree = 2 if par.enable_cfg_parallel else 1
    used = par.sp_size * cfg_degree
    per = f"the {group} GPUs of each of the {par.dp_size} engine workers" if par.dp_size > 1 else f"parallel.num_gpus ({group})"
    if used > group:
        raise ConfigError(
            f"parallel.sp_size ({par.sp_size}) x cfg degree ({cfg_degree}) = {used} is more than {per}",
            param="parallel.num_gpus",
        )
    if used < group:
        raise ConfigError(
            f"parallel.sp_size ({par.sp_size}) x cfg degree ({cfg_degree}) = {used} would leave "
            f"{group - used} of {per} idle; set sp_size to {group // cfg_degree} or num_gpus to {used * par.dp_size}",
            param="parallel.sp_size",
        )
    if par.tp_size > group or group % par.tp_size:
        raise ConfigError(
            f"parallel.tp_size ({par.tp_size}) must divide {per}",
            param="parallel.tp_size",
        )
