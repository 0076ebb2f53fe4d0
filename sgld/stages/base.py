"""Stage base class: runs ``forward`` (one request) or ``forward_batch`` (several) and records the wall time."""

from __future__ import annotations

import time

from sgld.request import Request


class Stage:
    """One step of a pipeline over a Request."""

    name = "stage"

    def forward(self, req: Request) -> Request:  # pragma: no cover - abstract
        """Do this stage's work on ``req`` and return it."""
        raise NotImplementedError

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        """Do this stage's work on several requests that share one batch; stages with batched kernels override it."""
        return [self.forward(req) for req in reqs]

    def __call__(self, req: Request) -> Request:
        return self.run_batch([req])[0]

    def run_batch(self, reqs: list[Request]) -> list[Request]:
        """``forward_batch`` timed: every request of the batch records the batch's stage time."""
        start = time.perf_counter()
        reqs = self.forward_batch(reqs) if len(reqs) > 1 else [self.forward(reqs[0])]
        _sync_accelerator()
        elapsed = time.perf_counter() - start
        for req in reqs:
            req.timings[self.name] = elapsed
        return reqs


def _sync_accelerator() -> None:
    """Wait for queued GPU work so the stage's time is its own (one sync per stage)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
