"""A rank body (for ``launch``): compiled, sequence-parallel models, each serving an uneven size, then an even one.

Module-level so spawned ranks can import it by name.
"""

from __future__ import annotations

from typing import Any

from sgld.config.schema import RunConfig
from sgld.parallel.state import ParallelState

# (height, width, frames) per model: first a size whose tokens do not split over 2 ranks, then one that does.
# Tiny FLUX: 9 image tokens, then 16; tiny Wan (patch 1x2x2 on a 4x-downsampled latent): 27, then 48.
SIZES = {"tiny-flux": ((48, 48, None), (64, 64, None)), "tiny-wan-t2v": ((48, 48, 9), (64, 64, 9))}


def size_options(height: int, width: int, frames: int | None) -> dict:
    """The generate options of one size."""
    return {"height": height, "width": width, **({"num_frames": frames} if frames else {})}


class UnevenThenEven:
    """Each run in turn on one launch of the ranks (a launch costs more than a tiny compiled run): rank 0's frames
    per size, the compiler's stance after the run, and how many graphs dynamo compiled for it."""

    def __init__(self, runs: list[RunConfig]):
        self.runs = runs

    def __call__(self, first: RunConfig, state: ParallelState) -> list[dict]:
        """``first`` is ``runs[0]`` (the run ``launch`` was given), ``state`` its mesh; the later runs build theirs."""
        import torch
        from torch._dynamo.utils import counters

        from sgld.api import DiffGenerator
        from sgld.parallel.state import init_distributed

        results = []
        for index, run in enumerate(self.runs):
            graphs_before = counters["stats"]["unique_graphs"]
            with DiffGenerator.from_run_config(run, state if index == 0 else init_distributed(run)) as generator:
                frames = {size: generator.generate(**size_options(*size), return_frames=True).frames
                          for size in SIZES[run.model.path]}
            results.append({"frames": frames, "stance": torch._dynamo.eval_frame._stance.stance,
                            "graphs": counters["stats"]["unique_graphs"] - graphs_before})
        return results
