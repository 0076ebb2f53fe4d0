"""The whole DiT forward replayed as a CUDA graph, one graph per input signature (``--cuda-graphs``).

Between its kernels a DiT forward spends host time launching them; a CUDA graph launches the
captured kernels in one call. Over compile + FA3 on an H200 that saved little (docs/performance.md
has the figures), as the GPU already hides most launch time there; it pays more where a step is short against its Python dispatch. Regional capture (torch.compile's
``reduce-overhead`` per block) failed here because each block's graph output was overwritten by the
next block's replay; this captures the whole forward instead and copies the output out of the graph's
memory before returning it.

The graph reads its inputs from fixed buffers: each call copies its tensors in, replays, and clones
the outputs. A new signature (tensor shapes and dtypes, the other arguments' values) runs the
forward twice uncaptured (compiling, cuDNN/FA3 planning), then captures it. A forward that cannot be
captured (a host sync inside, e.g. a data-dependent branch) runs uncaptured from then on for that
signature, and the log says why once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

WARMUP_CALLS = 2  # uncaptured runs before capture: the compile (or its guards) and the kernels' plans settle


def signature(kwargs: dict[str, Any]) -> tuple:
    """What a captured graph is good for: tensors by shape, dtype and device; everything else by value."""

    def key(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, str(value.device), value.stride())
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(key(v) for v in value))
        if isinstance(value, dict):
            return ("dict", tuple(sorted((k, key(v)) for k, v in value.items())))
        return ("value", repr(value))

    return tuple(sorted((name, key(value)) for name, value in kwargs.items()))


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors inside ``value`` (nested lists, tuples, dicts) in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _tensors(value[k])]
    return []


def _clone_tensors(value: Any) -> Any:
    """``value`` with each tensor cloned (the graph's static inputs), structure kept."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_tensors(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_tensors(v) for k, v in value.items()}
    return value


@dataclass
class _Captured:
    graph: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    calls: int = 0
    failed: str | None = None


class GraphedForward:
    """``forward(**kwargs)`` run through per-signature CUDA graphs; install with ``enable_cuda_graphs``."""

    def __init__(self, forward: Callable[..., Any]):
        self.forward = forward
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or not torch.cuda.is_available() or torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        entry = self.graphs.setdefault(signature(kwargs), _Captured())
        if entry.failed is not None or entry.calls < WARMUP_CALLS:
            entry.calls += 1
            return self.forward(**kwargs)
        if entry.graph is None:
            self._capture(entry, kwargs)
            if entry.graph is None:
                return self.forward(**kwargs)
        for static, given in zip(_tensors(entry.inputs), _tensors(kwargs)):
            static.copy_(given)
        entry.graph.replay()
        return _clone_tensors(entry.output)  # the next replay reuses the graph's memory

    def _capture(self, entry: _Captured, kwargs: dict[str, Any]) -> None:
        entry.inputs = _clone_tensors(kwargs)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        torch.cuda.synchronize()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                entry.output = self.forward(**entry.inputs)
        except Exception as exc:  # noqa: BLE001 - this signature runs uncaptured; the reason is logged once
            entry.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            entry.inputs, entry.output = {}, None
            log.warning("cuda_graphs: this forward cannot be captured (%s); it runs without a graph", entry.failed)
            torch.cuda.synchronize()
            return
        entry.graph = graph
        log.info("cuda_graphs: captured a DiT forward (%d signature(s) so far)", sum(e.graph is not None for e in self.graphs.values()))


def enable_cuda_graphs(module: torch.nn.Module, device: torch.device) -> bool:
    """Replay ``module``'s forward as CUDA graphs; False (and a log line saying why) where it cannot."""
    if device.type != "cuda":
        log.warning("cuda_graphs: needs a CUDA GPU, this run is on %s; running without graphs", device.type)
        return False
    module.forward = GraphedForward(module.forward)
    return True
