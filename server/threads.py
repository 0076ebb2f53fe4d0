"""The CPU thread budget of a serving process: torch's intra-op threads per engine worker.

torch takes every core by default. Several engine workers on one machine (``--dp-size``, or replicas
told ``--replicas-on-host``) then run more threads than cores and slow each other down (measured:
docs/deployment.md, "Threads"), so each gets its share.
"""

from __future__ import annotations

import logging
import os

from sgld.config.schema import RunConfig

log = logging.getLogger("sgld.server")


def engine_workers_on_host(run: RunConfig) -> int:
    """Engine workers sharing this machine's cores: this replica's ``dp_size`` times the replicas on the host."""
    return run.parallel.dp_size * run.server.replicas_on_host


def thread_budget(run: RunConfig, cores: int) -> int:
    """torch threads per engine worker: ``server.torch_threads`` when set, else the cores divided among the workers."""
    if run.server.torch_threads is not None:
        return run.server.torch_threads
    return max(1, cores // engine_workers_on_host(run))


def apply_thread_budget(run: RunConfig) -> int:
    """Set this process's torch threads (and the ranks' through OMP_NUM_THREADS) to the budget; log it once.

    The engine workers of ``--dp-size`` are threads of this process, each getting a thread team of this size
    for its own work; a multi-rank engine's ranks are processes that split it between them.
    """
    import torch

    cores = os.cpu_count() or 1
    budget = thread_budget(run, cores)
    torch.set_num_threads(budget)
    ranks = max(1, run.parallel.num_gpus // run.parallel.dp_size)
    os.environ["OMP_NUM_THREADS"] = str(max(1, budget // ranks))  # rank processes read it as torch starts
    source = ("server.torch_threads" if run.server.torch_threads is not None else
              f"{cores} cores / {engine_workers_on_host(run)} engine workers on this host "
              f"(dp_size {run.parallel.dp_size} x replicas_on_host {run.server.replicas_on_host})")
    log.info("torch threads per engine worker: %d (%s)%s", budget, source,
             f"; {max(1, budget // ranks)} per rank" if ranks > 1 else "")
    return budget
