"""Cache-DiT on an sgld DiT: cache-dit's own DBCache (with its TaylorSeer/DMD calibrators and step masks), driven
per request through a StepHook.

cache-dit counts the DiT's forwards itself (with separate CFG: even calls are the conditional branch, odd ones the
unconditional), so the hook asks the loop for the two branches as separate forwards, cond first, the order the
diffusers pipelines cache-dit was written for call them. Its per-request state lives in cache-dit's contexts,
which ``start`` makes afresh for every request; the DiT is mounted (cache-dit's block wrappers installed) once,
at load when Cache-DiT is the default, else on the first request that asks. A request without Cache-DiT on a
mounted DiT gets a context that computes every block (threshold 0, no calibrator): the same arithmetic as the
plain forward, which the tests hold bit-exact.
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

from sgld.errors import UserError
from sgld.config.cache_dit import CALIBRATOR_KEYS, SCM_KEYS, cache_options, merged, request_settings
from sgld.request import Request

log = logging.getLogger(__name__)

# A context that computes every block: what a request without Cache-DiT runs on a mounted DiT.
COMPUTE_ALL = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.0, "max_warmup_steps": 0}


def import_cache_dit():
    """cache-dit, its logging kept to warnings (it logs every mount and summary to stdout at info)."""
    quiet = "CACHE_DIT_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["CACHE_DIT_LOG_LEVEL"] = "warning"  # read once, when cache-dit is first imported
    try:
        import cache_dit
    except ImportError as exc:  # a dependency of sgld: only a broken install lacks it
        raise UserError(f"Cache-DiT needs the cache-dit package ({exc}); pip install cache-dit",
                        param="cache") from None
    if quiet:  # imported before with its default (info): each of its module loggers has its own level
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("cache_dit") or name == "CACHE_DIT":
                logging.getLogger(name).setLevel(logging.WARNING)
    return cache_dit


class CacheDitHook:
    """One DiT's Cache-DiT: mounted once, its cache contexts made afresh for every request (a StepHook)."""

    def __init__(self, module: torch.nn.Module, base: Mapping[str, Any], default_on: bool, *,
                 cfg_parallel: bool = False, secondary: bool = False, mount_now: bool = False):
        self.module = module
        self.base = dict(base)
        self.default_on = default_on
        self.cfg_parallel = cfg_parallel
        self.secondary = secondary
        self.mounted = False
        self.active = False
        self._req: Request | None = None
        if mount_now:
            self._load(cache_options({k: v for k, v in self.base.items() if k not in SCM_KEYS}, 1, False))  # checked now
            self._mount()

    def wanted(self, req: Request) -> bool:
        """Whether ``req`` runs with Cache-DiT: its own ``enable_cache_dit``, else the run's default."""
        return self.default_on if req.enable_cache_dit is None else bool(req.enable_cache_dit)

    def start(self, req: Request) -> None:
        """A fresh cache context for this request: its settings (or compute-all), its steps, its branches."""
        self._req = req
        self.active = self.wanted(req)
        if not self.active and not self.mounted:
            return
        if not self.mounted:
            self._mount()
        separate = self.active and req.uncond_kwargs is not None and not self.cfg_parallel
        if self.active:
            settings = merged(self.base, request_settings(req.cache_dit_params), self.secondary)
        else:
            settings = COMPUTE_ALL
        options = cache_options(settings, req.num_inference_steps, separate)
        cache_config, calibrator = self._load(options)
        manager = self.module._context_manager  # noqa: SLF001 - cache-dit's handle on this DiT's contexts
        for name in self.module._context_names:  # noqa: SLF001
            manager.reset_context(name, cache_config=copy.deepcopy(cache_config),
                                  calibrator_config=copy.deepcopy(calibrator))
        if self.active:
            req.step_cache = {"kind": "cache_dit", "computed": {}, "cached": {}}

    def separate_branches(self) -> bool:
        """cache-dit tells the branches apart by call order: with Cache-DiT on they run as separate forwards."""
        return self.active

    @contextmanager
    def around_forward(self, branch: str, step: int) -> Iterator[None]:
        """The forward runs through cache-dit's wrappers; the request's report counts it as computed or cached."""
        report = self._req.step_cache if self.active and self._req is not None else None
        if report is None:
            yield
            return
        before = self._cached_count(branch)
        yield
        bucket = "cached" if self._cached_count(branch) > before else "computed"
        report[bucket][branch] = report[bucket].get(branch, 0) + 1

    def _cached_count(self, branch: str) -> int:
        """Steps cache-dit has served from its cache so far in this request, for ``branch``."""
        context = self.module._context_manager.get_context(self.module._context_names[-1])  # noqa: SLF001
        return len(context.get_cfg_cached_steps() if branch == "uncond" else context.get_cached_steps())

    def _mount(self) -> None:
        cache_dit = import_cache_dit()
        if not cache_dit.BlockAdapterRegister.is_supported(self.module):
            raise UserError(f"Cache-DiT: cache-dit {cache_dit.__version__} has no block adapter for "
                            f"{type(self.module).__name__}", param="enable_cache_dit")
        cache_config, calibrator = self._load(cache_options(COMPUTE_ALL, 1, False))
        cache_dit.enable_cache(self.module, cache_config=cache_config, calibrator_config=calibrator)
        self.mounted = True
        log.info("Cache-DiT: cache-dit %s mounted on %s", cache_dit.__version__, type(self.module).__name__)

    @staticmethod
    def _load(options: Mapping[str, Any]):
        """cache-dit's config objects from its flat options (its own loader), errors as the user's."""
        cache_dit = import_cache_dit()
        known = set(cache_dit.DBCacheConfig.__dataclass_fields__) | set(CALIBRATOR_KEYS)
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"Cache-DiT settings: unknown key(s) {', '.join(unknown)} for cache-dit "
                            f"{cache_dit.__version__}", param="cache.cache_dit_config")
        try:
            return cache_dit.load_cache_config(dict(options))
        except (ValueError, TypeError, AssertionError) as exc:
            raise UserError(f"Cache-DiT settings: {exc}", param="cache.cache_dit_config") from None

