"""Per-step behaviour that a model's set-up adds to the denoise loop (step cache, sliding-tile windows).

The loop knows nothing model-specific: it calls ``start`` once per request and wraps each DiT
forward in ``around_forward(branch, step)``. Hooks are returned by the set-up that installs
them and handed to the loop, never stored on the modules for the loop to find.
"""

from __future__ import annotations

from typing import ContextManager, Protocol


class StepHook(Protocol):
    """One per-step behaviour of a DiT."""

    def start(self) -> None:
        """A new request's denoise loop begins: drop state carried over from the last request."""

    def around_forward(self, branch: str, step: int) -> ContextManager[None]:
        """Entered around one DiT forward of ``branch`` ("cond", "uncond", "cond_uncond") at ``step``."""
