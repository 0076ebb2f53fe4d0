"""Qwen-Image's per-block modulation computed once a step, not once per guidance branch.

Each of Qwen-Image's 60 blocks starts with two modulation projections of the timestep embedding (``img_mod`` and
``txt_mod``: SiLU, then a 3072 → 18432 linear). With true CFG the step runs the DiT twice, for the prompt and the
negative prompt, on one timestep: the embedding and so all 120 projections are the same both times. They are
matrix-vector products that stream 13.6 GB of weights a forward (about 5 ms of a 132 ms forward on an H100:
docs/performance.md), so the second branch's are pure cost. SGLang caches them across the branches too (its
``QwenImageTransformerBlock`` keys them on the timestep tensor), but only when not compiling; here they are
computed outside the compiled blocks, so they are shared under ``torch.compile`` as well.

How: each block's ``img_mod``/``txt_mod`` becomes a ``ModulationSlot`` (the same ``nn.Sequential`` children, so
state dicts, LoRA target names and FP8/GGUF layer swaps are unchanged) that returns a value computed in a forward
hook on the time embedding, i.e. before the first block runs. The denoise loop says which step each forward
belongs to (``around_forward``); the first forward of a step computes the values, later ones of the same step,
batch and dtype reuse them. A forward outside the loop (a benchmark, a warm-up) always computes. Not installed
with CUDA graphs (a replay would skip the hook's decision) or with the DiT offloaded block by block (the blocks'
weights are not on the GPU when the time embedding runs).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from sgld.config.schema import DitOffload, RunConfig
from sgld.request import Request

log = logging.getLogger(__name__)


class ModulationSlot(nn.Sequential):
    """A block's modulation projection (diffusers' SiLU → Linear, children and names kept) that returns the value
    its ``SharedModulation`` hook stored for this forward, or computes it when none is stored."""

    def __init__(self, original: nn.Sequential):
        super().__init__(*original)
        self.value: torch.Tensor | None = None

    def compute(self, temb: torch.Tensor) -> torch.Tensor:
        """The projection of ``temb``, as the original module computes it."""
        return super().forward(temb)

    def forward(self, temb: torch.Tensor) -> torch.Tensor:  # noqa: D102 - the stored value, else the projection
        return self.compute(temb) if self.value is None else self.value


class SharedModulation:
    """The step hook that fills a Qwen-Image DiT's ``ModulationSlot``s once per step (see the module docstring)."""

    def __init__(self, transformer: nn.Module):
        self.blocks = list(transformer.transformer_blocks)
        for block in self.blocks:
            block.img_mod = ModulationSlot(block.img_mod)
            block.txt_mod = ModulationSlot(block.txt_mod)
        self.step: int | None = None
        self.key: tuple | None = None
        self.computed = 0  # forwards that computed the projections
        self.reused = 0  # forwards that reused those of an earlier forward of their step
        self.handle = transformer.time_text_embed.register_forward_hook(self._fill)

    def start(self, req: Request) -> None:
        """A new request: nothing of the last one's steps is reused (its adapters or weights may differ)."""
        self.key = None

    def separate_branches(self) -> bool:
        """Batched branches share one forward and so one computation: no need to separate them."""
        return False

    @contextmanager
    def around_forward(self, branch: str, step: int) -> Iterator[None]:
        """Marks the forward as one of ``step``'s, so a second forward of the step reuses the first's values."""
        self.step = step
        try:
            yield
        finally:
            self.step = None

    def _fill(self, module: nn.Module, args: tuple, temb: torch.Tensor) -> None:
        key = None if self.step is None else (self.step, tuple(temb.shape), temb.dtype, temb.device)
        if key is not None and key == self.key:
            self.reused += 1
            return
        for block in self.blocks:
            block.img_mod.value = block.img_mod.compute(temb)
            # diffusers' block gives txt_mod the first half of a zero_cond_t embedding (Qwen-Image-Edit-2511)
            block.txt_mod.value = block.txt_mod.compute(temb.chunk(2, dim=0)[0] if block.zero_cond_t else temb)
        self.key = key
        self.computed += 1

    def remove(self) -> None:
        """Back to computing in each block (the slots stay, empty)."""
        self.handle.remove()
        for block in self.blocks:
            block.img_mod.value = block.txt_mod.value = None


def shared_modulation_hook(transformer: nn.Module, run: RunConfig) -> SharedModulation | None:
    """Install ``SharedModulation`` on a Qwen-Image DiT where it is safe (no CUDA graphs, DiT not offloaded block by
    block); None for any other DiT or run."""
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel

    if not isinstance(transformer, QwenImageTransformer2DModel):
        return None
    if run.model.cuda_graphs or run.offload.dit == DitOffload.layerwise:
        return None
    hook = SharedModulation(transformer)
    log.debug("Qwen-Image's block modulations computed once a step for both guidance branches")
    return hook
