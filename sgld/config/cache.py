"""The step cache a run and each of its requests use: one reading of ``cache`` and ``sampling.enable_*``.

The run's ``cache.kind`` is the default of every request; a request's ``enable_cache_dit`` / ``enable_teacache``
(None: follow the run) turns Cache-DiT or TeaCache on or off for itself. first_block is the model's, per run.
"""

from __future__ import annotations

from typing import Mapping

from sgld.config.cache_dit import env_enabled, request_settings
from sgld.config.schema import CacheKind, RunConfig
from sgld.errors import ConfigError, UserError


def resolve_kind(run: RunConfig, environ: Mapping[str, str] | None = None) -> None:
    """An unset ``cache.kind``: cache_dit where a cache-dit config file or SGLang's SGLANG_CACHE_DIT_ENABLED asks, else none."""
    if run.cache.kind is not None:
        return
    on = bool(run.cache.cache_dit_config) or env_enabled(environ)
    run.cache.kind = CacheKind.cache_dit if on else CacheKind.none


def uses_cache_dit(run: RunConfig) -> bool:
    """Whether this run's (request's) denoise loop runs with Cache-DiT."""
    wanted = run.sampling.enable_cache_dit
    return run.cache.kind == CacheKind.cache_dit if wanted is None else bool(wanted)


def uses_teacache(run: RunConfig) -> bool:
    """Whether this run's (request's) denoise loop runs with TeaCache."""
    wanted = run.sampling.enable_teacache
    return run.cache.kind == CacheKind.teacache if wanted is None else bool(wanted)


def uses_step_cache(run: RunConfig) -> bool:
    """Whether any step cache runs: the model's first_block, or Cache-DiT / TeaCache for this request."""
    return run.cache.kind == CacheKind.first_block or uses_cache_dit(run) or uses_teacache(run)


def check_cache(run: RunConfig) -> None:
    """Raise ConfigError for cache settings no model can run, naming the key."""
    cache = run.cache
    if not 0 < cache.first_block_threshold < 1:
        raise ConfigError(f"cache.first_block_threshold must be between 0 and 1, got {cache.first_block_threshold}",
                          param="cache.first_block_threshold")
    if cache.teacache_thresh is not None and cache.teacache_thresh < 0:
        raise ConfigError(f"cache.teacache_thresh must be >= 0, got {cache.teacache_thresh}", param="cache.teacache_thresh")
    if uses_cache_dit(run) and uses_teacache(run):
        raise ConfigError("Cache-DiT and TeaCache both on: a request runs one step cache; turn one off "
                          "(enable_cache_dit=false or enable_teacache=false)", param="sampling.enable_teacache")
    if cache.kind == CacheKind.first_block and (uses_cache_dit(run) or uses_teacache(run)):
        asked = "enable_cache_dit" if uses_cache_dit(run) else "enable_teacache"
        raise ConfigError(f"{asked}: this model runs the first_block cache (cache.kind=first_block), and a request "
                          "runs one step cache", param=f"sampling.{asked}")
    if run.sampling.cache_dit_params is not None:
        try:
            request_settings(run.sampling.cache_dit_params)
        except UserError as exc:
            raise ConfigError(str(exc), param="sampling.cache_dit_params") from None
