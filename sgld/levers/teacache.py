"""TeaCache (Liu et al., "Timestep Embedding Tells", arXiv 2411.14324): skip a whole pass through the DiT's blocks
while the modulated input has changed little since the last computed step, and add the last computed residual.

Per CFG branch: the relative L1 change of the modulated input from the previous step, rescaled by a per-model
polynomial fitted by the TeaCache authors, is accumulated; while the sum stays below the threshold the blocks are
skipped (output = input + the branch's last residual), else they run and the sum restarts. Steps outside the
profile's window always compute. Only the blocks are skipped: the embedders, output norm and projection run.

The published coefficients (np.poly1d order, highest power first) used here, from ali-vilab/TeaCache at commit
7c10efc4702c6b619f47805f7abe4a7a08085aa0 (the same values SGLang ships):
- Wan2.1 (TeaCache4Wan2.1/teacache_generate.py), the modulated input being the timestep embedding:
  T2V-1.3B with ``use_ret_steps`` (the time projection, 5 warm-up steps), T2V-14B without (the time embedding,
  first and last step computed), I2V-14B 480P and 720P with ``use_ret_steps``. Wan2.2 A14B's experts have Wan2.1
  14B's architecture and take the 14B rows (profiled on 2.1); Wan2.2 TI2V-5B has no published row (refused).
- HunyuanVideo (TeaCache4HunyuanVideo/teacache_sample_video.py): the first double block's modulated image tokens.
- FLUX.1 (TeaCache4FLUX/teacache_flux.py): the first double block's modulated image tokens.
Thresholds default to SGLang's (Wan, HunyuanVideo) or TeaCache's README's 1.5x setting (FLUX). A DiT of another
width than the published ones (the tiny test models) takes its family's smaller row.

Under sequence parallelism (diffusers' context-parallel plan) each rank holds a shard of the tokens, and TeaCache
runs on the shards: the residual is the shard's (the blocks' input taken as the plan's split makes it, which for
Wan happens at the first block), and the criterion's two L1 sums are summed over the ranks of the split, so every
rank takes the one decision that the whole sequence gives.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence
from unittest import mock

import numpy as np
import torch

from sgld.errors import UserError
from sgld.request import Request

log = logging.getLogger(__name__)

# A block call's hidden_states / encoder_hidden_states: a positional index or a keyword name.
Where = int | str


@dataclass(frozen=True)
class Profile:
    """One published TeaCache setting: coefficients, which steps may skip, the default threshold."""

    name: str
    coefficients: tuple[float, ...]
    # Steps in [start, end) may skip; a negative end counts from the end (-1: the last step always computes).
    start: int
    end: int
    threshold: float
    # Wan: the modulated input is the time projection handed to every block (True) or the time embedding (False).
    ret_steps: bool = True

    def window(self, steps: int) -> tuple[int, int]:
        """The steps that may skip, as [start, end)."""
        return self.start, steps + self.end if self.end <= 0 else self.end


WAN_T2V_1_3B = Profile("Wan2.1-T2V-1.3B (ret_steps)", (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01,
                                                      -4.99875664e-02), 5, 0, 0.08)
WAN_T2V_14B = Profile("Wan2.1-T2V-14B", (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
                      1, -1, 0.20, ret_steps=False)
WAN_I2V_480P = Profile("Wan2.1-I2V-14B-480P (ret_steps)", (2.57151496e05, -3.54229917e04, 1.40286849e03,
                                                           -1.35890334e01, 1.32517977e-01), 5, 0, 0.26)
WAN_I2V_720P = Profile("Wan2.1-I2V-14B-720P (ret_steps)", (8.10705460e03, 2.13393892e03, -3.72934672e02,
                                                           1.66203073e01, -4.17769401e-02), 5, 0, 0.30)
HUNYUAN = Profile("HunyuanVideo", (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02),
                  1, -1, 0.15)
FLUX = Profile("FLUX.1", (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01), 1, -1, 0.25)


def wan_profile(config: Any, height: Optional[int], width: Optional[int]) -> Profile:
    """Wan2.1's row for a DiT config: I2V (condition channels beside the noise) by output size, T2V by width (5120: 14B)."""
    if config.in_channels != config.out_channels:
        return WAN_I2V_480P if (height or 0) * (width or 0) <= 480 * 832 else WAN_I2V_720P
    return WAN_T2V_14B if config.num_attention_heads * config.attention_head_dim == 5120 else WAN_T2V_1_3B


@dataclass(frozen=True)
class Layout:
    """How a DiT runs its blocks: the block lists in order, where a block call takes its streams, what it returns."""

    lists: tuple[str, ...]
    hidden: Where
    encoder: Where
    returns: str  # "h" (hidden only), "he" (hidden, encoder), "eh" (encoder, hidden)


def _first_block_modulation(hook: "TeaCacheHook", first: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The first double block's norm1 on its inputs (FLUX, HunyuanVideo): the modulated image tokens."""
    layout = hook.family.layout
    temb = _get(args, kwargs, 2 if isinstance(layout.hidden, int) else "temb")
    return first.norm1(_get(args, kwargs, layout.hidden), emb=temb)[0]


@dataclass
class Family:
    """A DiT class's TeaCache: its block layout, its profile for a request, its modulated input."""

    layout: Layout
    profile: Callable[[Any, Request], Profile]
    # The modulated input, from the hook, the first block and that block's call.
    modulated: Callable[["TeaCacheHook", torch.nn.Module, tuple, dict], torch.Tensor]


def _wan_modulated(hook: "TeaCacheHook", first: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    return _get(args, kwargs, 2) if hook.profile.ret_steps else hook.time_embedding


FAMILIES = {
    "WanTransformer3DModel": Family(Layout(("blocks",), 0, 1, "h"),
                                    lambda config, req: wan_profile(config, req.height, req.width), _wan_modulated),
    "HunyuanVideoTransformer3DModel": Family(
        Layout(("transformer_blocks", "single_transformer_blocks"), 0, 1, "he"), lambda config, req: HUNYUAN,
        _first_block_modulation),
    "FluxTransformer2DModel": Family(
        Layout(("transformer_blocks", "single_transformer_blocks"), "hidden_states", "encoder_hidden_states", "eh"),
        lambda config, req: FLUX, _first_block_modulation),
}


def rescaled_distance(modulated: torch.Tensor, previous: torch.Tensor, coefficients: Sequence[float],
                      group: Optional[Any] = None) -> float:
    """TeaCache's criterion for one step: the polynomial of the relative L1 change of the modulated input.

    ``group``: the process group of a sequence split whose ranks each hold a shard of the modulated input; the
    change and the base are summed over it (their ratio is the ratio of the whole tensors' means)."""
    if group is None:
        relative = ((modulated - previous).abs().mean() / previous.abs().mean()).item()
    else:
        import torch.distributed as dist

        sums = torch.stack([(modulated - previous).abs().sum(), previous.abs().sum()]).double()
        dist.all_reduce(sums, group=group)
        relative = (sums[0] / sums[1]).item()
    return float(np.poly1d(coefficients)(relative))


def sequence_group(module: torch.nn.Module) -> Optional[Any]:
    """The process group over which diffusers' context-parallel plan splits ``module``'s tokens (None: no split)."""
    config = getattr(module, "_parallel_config", None)
    mesh = getattr(getattr(config, "context_parallel_config", config), "_flattened_mesh", None)
    return mesh.get_group() if mesh is not None and mesh.size() > 1 else None


def split_as_the_block_would(block: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``block``'s call arguments as its context-parallel split hook hands them on (Wan's plan splits the hidden
    states at the first block); unchanged where no split hook sits on it. The split is local (no collective)."""
    from diffusers.hooks.context_parallel import ContextParallelSplitHook

    registry = getattr(block, "_diffusers_hook", None)
    for hook in (registry.hooks.values() if registry is not None else ()):
        if isinstance(hook, ContextParallelSplitHook):
            args, kwargs = hook.pre_forward(block, *args, **dict(kwargs))
    return args, kwargs


@dataclass
class BranchState:
    """One CFG branch's TeaCache state within a request."""

    previous: Optional[torch.Tensor] = None  # the last step's modulated input
    accumulated: float = 0.0
    residual: Optional[torch.Tensor] = None  # output - input of the blocks, at the last computed step
    hidden_in: Optional[torch.Tensor] = None
    skip: bool = False


@dataclass
class Decision:
    """What TeaCache decided for one forward (kept on the request for tests and reports)."""

    branch: str
    step: int
    skipped: bool
    distance: Optional[float]  # the rescaled distance added this step (None: outside the window or no history)


class TeaCacheHook:
    """TeaCache on one DiT, per request and per CFG branch (a StepHook)."""

    def __init__(self, module: torch.nn.Module, default_on: bool, threshold: Optional[float]):
        family = FAMILIES.get(type(module).__name__)
        if family is None:
            raise UserError(f"TeaCache: no published coefficients for {type(module).__name__} (TeaCache exists for "
                            "Wan2.1 T2V/I2V, HunyuanVideo and FLUX.1)", param="enable_teacache")
        self.module = module
        self.family = family
        self.default_on = default_on
        self.threshold = threshold
        self.active = False
        self.profile = WAN_T2V_1_3B
        self.time_embedding: Optional[torch.Tensor] = None
        self._req: Optional[Request] = None
        self._states: dict[str, BranchState] = {}
        self._window = (0, 0)
        self._thresh = 0.0
        self._group: Optional[Any] = None
        if hasattr(module, "condition_embedder"):  # Wan without ret_steps reads the time embedding the blocks never see
            module.condition_embedder.register_forward_hook(self._keep_time_embedding)

    def _keep_time_embedding(self, _module, _inputs, output) -> None:
        if self.active:
            self.time_embedding = output[0]

    def wanted(self, req: Request) -> bool:
        """Whether ``req`` runs with TeaCache: its own ``enable_teacache``, else the run's default."""
        return self.default_on if req.enable_teacache is None else bool(req.enable_teacache)

    def start(self, req: Request) -> None:
        """Fresh per-branch state; this request's profile, window and threshold."""
        self._req = req
        self._states = {}
        self.active = self.wanted(req)
        if not self.active:
            return
        if getattr(self.module, "_is_cached", False):  # cache-dit's wrappers replace the block lists in each forward
            self.active = False
            raise UserError("TeaCache: an earlier request mounted Cache-DiT on this DiT, and cache-dit's wrappers replace "
                            "the block lists TeaCache wraps; run TeaCache where Cache-DiT has not run",
                            param="enable_teacache")
        self.profile = self.family.profile(self.module.config, req)
        self._window = self.profile.window(req.num_inference_steps)
        self._thresh = self.profile.threshold if self.threshold is None else self.threshold
        # Summed over the split whatever the family: a modulated input taken from the tokens (FLUX's) differs per
        # rank, and one that is whole on every rank (Wan's timestep projection) gives the same ratio summed.
        self._group = sequence_group(self.module)
        req.step_cache = {"kind": "teacache", "profile": self.profile.name, "threshold": self._thresh,
                          "computed": {}, "cached": {}, "decisions": []}

    def separate_branches(self) -> bool:
        """Each branch's state is keyed by its name, batched or not."""
        return False

    def around_forward(self, branch: str, step: int) -> ContextManager[None]:
        """While active: the block lists replaced, for this forward, by segments that decide and skip or run."""
        if not self.active:
            return nullcontext()
        return self._patched(self._states.setdefault(branch, BranchState()), branch, step)

    @contextmanager
    def _patched(self, state: BranchState, branch: str, step: int) -> Iterator[None]:
        layout = self.family.layout
        lists = [name for name in layout.lists if len(getattr(self.module, name))]
        with ExitStack() as stack:
            for i, name in enumerate(lists):
                segment = _Segment(getattr(self.module, name), self, state, branch, step, first=i == 0,
                                   last=i == len(lists) - 1)
                stack.enter_context(mock.patch.object(self.module, name, torch.nn.ModuleList([segment])))
            yield

    def decide(self, state: BranchState, modulated: torch.Tensor, branch: str, step: int) -> bool:
        """Skip this forward? TeaCache's rule; the modulated input becomes the branch's previous one either way."""
        start, end = self._window
        distance = None
        skip = False
        if start <= step < end and state.previous is not None and state.residual is not None and self._thresh > 0:
            distance = rescaled_distance(modulated, state.previous, self.profile.coefficients, self._group)
            state.accumulated += distance
            skip = state.accumulated < self._thresh
        if not skip:
            state.accumulated = 0.0
        state.previous = modulated.detach().clone()
        report = self._req.step_cache
        bucket = "cached" if skip else "computed"
        report[bucket][branch] = report[bucket].get(branch, 0) + 1
        report["decisions"].append(Decision(branch, step, skip, distance))
        return skip


class _Segment(torch.nn.Module):
    """One block list of one forward: decides at the first block call (first list), then skips or runs its blocks;
    the last list adds the cached residual (skip) or records it (run)."""

    def __init__(self, blocks: torch.nn.ModuleList, hook: TeaCacheHook, state: BranchState, branch: str, step: int,
                 first: bool, last: bool):
        super().__init__()
        self.blocks = blocks
        self.hook, self.state, self.branch, self.step = hook, state, branch, step
        self.first, self.last = first, last

    def forward(self, *args, **kwargs):
        layout, state = self.hook.family.layout, self.state
        if self.first:
            modulated = self.hook.family.modulated(self.hook, self.blocks[0], args, kwargs)
            state.skip = self.hook.decide(state, modulated, self.branch, self.step)
            # The blocks' input as the first block sees it: this rank's shard where the plan splits there.
            state.hidden_in = _get(*split_as_the_block_would(self.blocks[0], args, kwargs), layout.hidden)
        hidden, encoder = _get(args, kwargs, layout.hidden), _get(args, kwargs, layout.encoder)
        if state.skip:
            if self.last:  # a skipped earlier list handed its input on unchanged: the blocks' input is hidden_in
                hidden = state.hidden_in + state.residual
            return _join(layout.returns, hidden, encoder)
        for block in self.blocks:
            hidden, encoder = _split(layout.returns, block(*args, **kwargs), encoder)
            args, kwargs = _set(args, kwargs, layout.hidden, hidden)
            args, kwargs = _set(args, kwargs, layout.encoder, encoder)
        if self.last:
            state.residual = hidden - state.hidden_in
        return _join(layout.returns, hidden, encoder)


def _get(args: tuple, kwargs: dict, where: Where):
    return args[where] if isinstance(where, int) else kwargs[where]


def _set(args: tuple, kwargs: dict, where: Where, value) -> tuple[tuple, dict]:
    if isinstance(where, int):
        return args[:where] + (value,) + args[where + 1:], kwargs
    return args, {**kwargs, where: value}


def _split(returns: str, out, encoder):
    """A block's output as (hidden, encoder); a hidden-only block leaves the encoder stream as it was."""
    if returns == "h":
        return out, encoder
    return (out[0], out[1]) if returns == "he" else (out[1], out[0])


def _join(returns: str, hidden, encoder):
    if returns == "h":
        return hidden
    return (hidden, encoder) if returns == "he" else (encoder, hidden)
