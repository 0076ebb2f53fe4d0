"""The rank layout of one parallel run: process groups for CFG, ring and Ulysses.

Ranks form a (cfg, ring, ulysses) device mesh, Ulysses innermost so its all-to-all stays
between neighbouring ranks (one NVLink island on a GPU host). Every rank of one cfg
slice runs the same branch with its share of the token sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch

from sgld.config.schema import RunConfig


@dataclass
class ParallelState:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    cfg_degree: int = 1
    ring_degree: int = 1
    ulysses_degree: int = 1
    mesh: Any = None  # DeviceMesh ("cfg", "ring", "ulysses"); None in single-process runs
    tp_degree: int = 1
    tp_mesh: Any = None  # 1-D DeviceMesh of this rank's text-encoder tensor-parallel group

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes outputs."""
        return self.rank == 0

    @property
    def sp_degree(self) -> int:
        return self.ring_degree * self.ulysses_degree

    @property
    def cfg_rank(self) -> int:
        """Which CFG branch this rank computes (0: conditional, 1: unconditional)."""
        return self.mesh["cfg"].get_local_rank() if self.cfg_degree > 1 else 0

    @property
    def cfg_group(self) -> Optional[Any]:
        return self.mesh["cfg"].get_group() if self.cfg_degree > 1 else None


def single_process(device: torch.device) -> ParallelState:
    """The state of a run in this process alone, on ``device``."""
    return ParallelState(device=device)


def in_torchrun() -> bool:
    """True inside a process started by torchrun (or any launcher that sets its env)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(run: RunConfig) -> ParallelState:
    """Join the process group torchrun started and build the mesh (NCCL on GPUs, gloo on CPU); this rank's state.

    The state is passed on explicitly (DiffGenerator.from_run_config, the pipeline, its stages): nothing
    reads it from a global."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    par = run.parallel
    world = int(os.environ["WORLD_SIZE"])
    if world != par.num_gpus:
        from sgld.errors import ConfigError

        raise ConfigError(f"torchrun started {world} processes but parallel.num_gpus={par.num_gpus}", param="num_gpus")
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and run.device in ("auto", "cuda")
    gpu = par.first_gpu + local_rank  # a data-parallel worker's ranks use its share of the GPUs
    if use_cuda:
        torch.cuda.set_device(gpu)
    device = torch.device("cuda", gpu) if use_cuda else torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=par.timeout_s),
                                device_id=device if use_cuda else None)
    cfg_degree = 2 if par.enable_cfg_parallel else 1
    mesh = init_device_mesh(device.type, (cfg_degree, par.ring_degree, par.ulysses_degree),
                            mesh_dim_names=("cfg", "ring", "ulysses"))
    tp_mesh = None
    if par.tp_size > 1:  # consecutive ranks share a text encoder
        tp_mesh = init_device_mesh(device.type, (world // par.tp_size, par.tp_size),
                                   mesh_dim_names=("tp_replica", "tp"))["tp"]
    return ParallelState(dist.get_rank(), world, local_rank, device, cfg_degree, par.ring_degree,
                         par.ulysses_degree, mesh, par.tp_size, tp_mesh)


def shutdown(together: bool = False) -> None:
    """Leave the process group; ``together``: the run ended normally on every rank.

    On gloo (CPU) a rank that finished early (the others still decode and save) and tore its group
    down aborted at exit about once in 15 runs ("terminate called without an active exception");
    waiting for every rank first, it did not in 34. After a failure the peers may never arrive, so no
    barrier then; NCCL runs never showed it, and there rank 0's decode could outlast the timeout.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        if together and dist.get_backend() == "gloo":
            dist.barrier()
        dist.destroy_process_group()
