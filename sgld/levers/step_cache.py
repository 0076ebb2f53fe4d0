"""Step caches: diffusers' cache hooks on the DiT, driven by the denoise loop through a StepHook."""

from __future__ import annotations

from typing import ContextManager

import torch

from sgld.errors import UserError
from sgld.request import Request


class StepCacheHook:
    """Each CFG branch keeps its own cache state (diffusers' cache context); the state is reset per request."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def start(self, req: Request) -> None:
        """A step cache must not carry over from the last request."""
        self.module._reset_stateful_cache()  # noqa: SLF001 - diffusers' public reset is per context only

    def separate_branches(self) -> bool:
        """Each branch has its own cache context, batched or not."""
        return False

    def around_forward(self, branch: str, step: int) -> ContextManager[None]:
        """The branch's cache context for this step."""
        return self.module.cache_context(branch, step_index=step)


def enable_step_cache(module: torch.nn.Module, kind: str, threshold: float) -> StepCacheHook:
    """Install diffusers' step-cache hooks on a DiT; the StepHook the denoise loop drives them with."""
    from diffusers import FirstBlockCacheConfig

    if kind != "first_block":
        raise UserError(f"cache={kind!r} is not available; use first_block", param="cache")
    config = FirstBlockCacheConfig(threshold=threshold)
    try:
        module.enable_cache(config)
    except (ValueError, AttributeError) as exc:
        raise UserError(f"cache={kind!r} is not available for {type(module).__name__}: {exc}", param="cache") from None
    return StepCacheHook(module)
