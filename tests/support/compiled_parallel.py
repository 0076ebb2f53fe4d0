"""A rank body (for ``launch``): one compiled, sequence-parallel model serving an uneven size, then an even one.

Module-level so spawned ranks can import it by name.
"""

from __future__ import annotations

from typing import Any

from sgld.config.schema import RunConfig

SIZES = ((48, 48), (64, 64))  # tiny FLUX: 9 image tokens (uneven over 2 ranks), then 16 (even)


def uneven_then_even(run: RunConfig, state: Any) -> dict:
    """Rank 0's frames per size, the compiler's stance afterwards, and how many graphs dynamo compiled."""
    import torch
    from torch._dynamo.utils import counters

    from sgld.api import DiffGenerator

    generator = DiffGenerator.from_run_config(run, state)
    frames = {size: generator.generate(height=size[0], width=size[1], return_frames=True).frames for size in SIZES}
    return {"frames": frames, "stance": torch._dynamo.eval_frame._stance.stance,
            "graphs": counters["stats"]["unique_graphs"]}
