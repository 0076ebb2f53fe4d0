"""Per-step behaviour that a model's set-up adds to the denoise loop (step caches, sliding-tile windows).

The loop knows nothing model-specific: it calls ``start`` once per request (a batch's first: batched
requests share what hooks read) and wraps each DiT forward in ``around_forward(branch, step)``. Hooks
are returned by the set-up that installs them and handed to the loop, never stored on the modules for
the loop to find.
"""

from __future__ import annotations

from typing import ContextManager, Protocol

from sgld.request import Request


class StepHook(Protocol):
    """One per-step behaviour of a DiT."""

    def start(self, req: Request) -> None:
        """A new request's denoise loop begins: drop state carried over from the last request, read its settings."""

    def separate_branches(self) -> bool:
        """Whether this request's guided branches must run as separate forwards, cond first (a step cache that
        tells them apart by call order), even where the loop would batch them."""

    def around_forward(self, branch: str, step: int) -> ContextManager[None]:
        """Entered around one DiT forward of ``branch`` ("cond", "uncond", "cond_uncond") at ``step``."""
