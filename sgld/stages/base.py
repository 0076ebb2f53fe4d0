"""Stage base class: runs ``forward`` and records its wall time in ``req.timings``."""

from __future__ import annotations

import time

from sgld.request import Request


class Stage:
    """One step of a pipeline over a Request."""

    name = "stage"

    def forward(self, req: Request) -> Request:  # pragma: no cover - abstract
        """Do this stage's work on ``req`` and return it."""
        raise NotImplementedError

    def __call__(self, req: Request) -> Request:
        start = time.perf_counter()
        req = self.forward(req)
        _sync_accelerator()
        req.timings[self.name] = time.perf_counter() - start
        return req


def _sync_accelerator() -> None:
    """Wait for queued GPU work so the stage's time is its own (one sync per stage)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
