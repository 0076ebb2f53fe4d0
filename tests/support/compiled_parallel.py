"""A run body (for ``tests/support/one_group.each_on_one_group``): a compiled, sequence-parallel model serving an
uneven size, then an even one.

Module-level so spawned ranks can import it by name.
"""

from __future__ import annotations

from sgld.config.schema import RunConfig
from sgld.parallel.state import ParallelState

# (height, width, frames) per model: first a size whose tokens do not split over 2 ranks, then one that does.
# Tiny FLUX: 9 image tokens, then 16; tiny Wan (patch 1x2x2 on a 4x-downsampled latent): 27, then 48.
SIZES = {"tiny-flux": ((48, 48, None), (64, 64, None)), "tiny-wan-t2v": ((48, 48, 9), (64, 64, 9))}


def size_options(height: int, width: int, frames: int | None) -> dict:
    """The generate options of one size."""
    return {"height": height, "width": width, **({"num_frames": frames} if frames else {})}


def uneven_then_even(run: RunConfig, state: ParallelState) -> dict:
    """Rank 0's frames per size, the compiler's stance afterwards, and how many graphs dynamo compiled for this run
    (a body for ``each_on_one_group``: other runs may have compiled before it in the same process)."""
    import torch
    from torch._dynamo.utils import counters

    from sgld.api import DiffGenerator

    graphs_before = counters["stats"]["unique_graphs"]
    with DiffGenerator.from_run_config(run, state) as generator:
        frames = {size: generator.generate(**size_options(*size), return_frames=True).frames
                  for size in SIZES[run.model.path]}
    return {"frames": frames, "stance": torch._dynamo.eval_frame._stance.stance,
            "graphs": counters["stats"]["unique_graphs"] - graphs_before}
