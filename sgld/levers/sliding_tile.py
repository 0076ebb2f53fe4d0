"""Sliding-tile attention (STA) for HunyuanVideo, from a FastVideo mask-strategy file, on flex_attention.

The video tokens form a (frames, height, width) grid after patchifying; it is cut into
tiles of ``TILE`` tokens. A mask strategy gives, for every denoising step ``t``, layer
``l`` (dual-stream blocks first, then single-stream ones) and head ``h``, a window in
tiles ``[wt, wh, ww]``: a video query attends to the video keys whose tile lies within
``w // 2`` tiles of its own tile's window centre in each axis (the centre is clamped so
the window stays inside the grid), and to every valid text token; text queries attend to
everything valid. The file is FastVideo's format: ``{"t_l_h": [wt, wh, ww], ...}``.

Tokens are reordered tile by tile before attention so that flex_attention's 128-token
blocks fall inside tiles and whole blocks are skipped; a window covering every tile
gives dense attention.
"""

from __future__ import annotations

import contextvars
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from contextlib import nullcontext
from typing import ContextManager, Optional

import torch

from sgld.errors import UserError
from sgld.request import Request

# Tile of the STA kernels, in latent tokens (frames, height, width).
TILE = (6, 8, 8)
PARAM = "mask_strategy_file_path"


def read_mask_strategy(path: str) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """``{(step, layer, head): (wt, wh, ww)}`` from a FastVideo mask-strategy JSON; UserError naming what is wrong."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"mask_strategy_file_path {path!r} does not exist", param=PARAM)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"mask strategy {path!r} is not valid JSON: {exc}", param=PARAM) from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"mask strategy {path!r} must be a non-empty mapping of \"step_layer_head\": [t, h, w]",
                        param=PARAM)
    strategy = {}
    for key, window in data.items():
        parts = key.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise UserError(f"mask strategy {path!r}: key {key!r} is not \"step_layer_head\"", param=PARAM)
        if (not isinstance(window, list) or len(window) != 3
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in window)):
            raise UserError(f"mask strategy {path!r}: {key!r} must be three window sizes >= 1 (tiles), got {window!r}",
                            param=PARAM)
        strategy[tuple(int(p) for p in parts)] = tuple(window)
    return strategy


def check_coverage(strategy: dict, steps: int, layers: int, heads: int, path: str) -> None:
    """Raise UserError when a step/layer/head the run uses has no window."""
    for t in range(steps):
        for layer in range(layers):
            for h in range(heads):
                if (t, layer, h) not in strategy:
                    raise UserError(f"mask strategy {path!r} has no window for step {t}, layer {layer}, head {h} "
                                    f"(this run: {steps} steps, {layers} layers, {heads} heads)", param=PARAM)


@lru_cache(maxsize=16)
def _tile_layout(grid: tuple[int, int, int], tile: tuple[int, int, int], device: str):
    """(order, inverse order, per-token tile coords (N, 3), tiles per axis) for a video grid."""
    f, h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 3)
    tiles = coords // torch.tensor(tile)
    # Tile-major order: tile (t, y, x), then position inside it.
    key = ((tiles[:, 0] * h + tiles[:, 1]) * w + tiles[:, 2]) * (f * h * w) + torch.arange(f * h * w)
    order = torch.argsort(key)
    counts = tuple(-(-n // s) for n, s in zip(grid, tile))
    return order.to(device), torch.argsort(order).to(device), tiles[order].to(device), counts


def _video_query_window_mask(grid, tile, windows: torch.Tensor, video: int, kv_end: int, device):
    """flex_attention mask_mod on tile-major token order (video tokens, then text)."""
    _, _, tiles, counts = _tile_layout(tuple(grid), tuple(tile), str(device))
    half = windows.to(device) // 2
    limit = torch.tensor(counts, device=device) - 1

    def mask(b, h, q_idx, kv_idx):
        q_tile = tiles[q_idx.clamp(max=video - 1)]
        kv_tile = tiles[kv_idx.clamp(max=video - 1)]
        centre = torch.minimum(torch.maximum(q_tile, half[h]), limit - half[h])
        near = ((centre - kv_tile).abs() <= half[h]).all(-1)
        # Valid keys only; a video query sees video keys in its window and all text.
        return (kv_idx < kv_end) & ((q_idx >= video) | (kv_idx >= video) | near)

    return mask


@lru_cache(maxsize=64)
def _block_mask(grid, tile, windows: tuple, video: int, kv_end: int, total: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    mask = _video_query_window_mask(grid, tile, torch.tensor(windows), video, kv_end, device)
    return create_block_mask(mask, B=None, H=len(windows), Q_LEN=total, KV_LEN=total, device=device)


@lru_cache(maxsize=1)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def sliding_tile_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, grid: tuple[int, int, int],
                           windows: torch.Tensor, valid_text: int, tile: tuple[int, int, int] = TILE) -> torch.Tensor:
    """Attention over ``grid``'s video tokens followed by text tokens, windowed per head.

    ``query/key/value``: (B, S, H, D), the first ``prod(grid)`` tokens video, the rest text
    of which the first ``valid_text`` are real (the others padding, never attended to).
    ``windows``: (H, 3) window sizes in tiles. Returns (B, S, H, D).
    """
    from torch.nn.attention.flex_attention import flex_attention

    grid, tile = tuple(grid), tuple(tile)
    video, total, device = grid[0] * grid[1] * grid[2], query.shape[1], query.device
    order, inverse, _, _ = _tile_layout(grid, tile, str(device))
    block_mask = _block_mask(grid, tile, tuple(tuple(int(x) for x in w) for w in windows.tolist()), video,
                             video + valid_text, total, str(device))
    permute = torch.cat([order, torch.arange(video, total, device=device)])
    q, k, v = (x[:, permute].transpose(1, 2) for x in (query, key, value))
    if device.type == "cuda":
        out = _compiled_flex_attention()(q, k, v, block_mask=block_mask)
    else:  # the unfused reference path: correct, and what a CPU run can use
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex_attention(q, k, v, block_mask=block_mask)
    out = out.transpose(1, 2)
    return torch.cat([out[:, :video][:, inverse], out[:, video:]], dim=1)


# The window of the attention call being made: (grid, (H, 3) windows); None -> dense attention.
_ACTIVE: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("sgld_sta_active", default=None)


@dataclass
class StaState:
    """What the processors need at a call: the denoising step and the video grid of this forward."""

    strategy: dict
    layers: int
    heads: int
    step: int = 0
    grid: tuple[int, int, int] = (0, 0, 0)

    def windows(self, layer: int, heads: int) -> torch.Tensor:
        return torch.tensor([self.strategy[(self.step, layer, h)] for h in range(heads)])

    def start(self, req: Request) -> None:
        """StepHook: nothing carries over between requests (the step is set before every forward)."""

    def separate_branches(self) -> bool:
        """StepHook: the windows are the same for both branches."""
        return False

    def around_forward(self, branch: str, step: int) -> ContextManager[None]:
        """StepHook: the windows of this step apply to the forward."""
        self.step = step
        return nullcontext()


class SlidingTileAttnProcessor:
    """HunyuanVideo's attention processor, with the attention call windowed for ``layer``."""

    def __init__(self, inner, layer: int, state: StaState):
        self.inner, self.layer, self.state = inner, layer, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        token = _ACTIVE.set((self.state.grid, self.state.windows(self.layer, attn.heads)))
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        finally:
            _ACTIVE.reset(token)


def windowed_dispatch(original):
    """HunyuanVideo's attention dispatch, windowed while a sliding-tile processor is active (installed by
    ``sgld.diffusers_patches``; dense attention otherwise)."""

    def dispatch(query, key, value, attn_mask=None, **kwargs):
        # Dynamo cannot trace ContextVar.get, and sliding tiles never run compiled (sgld.config.conflicts).
        active = None if torch.compiler.is_compiling() else _ACTIVE.get()
        if active is None:
            return original(query, key, value, attn_mask=attn_mask, **kwargs)
        grid, windows = active
        video = grid[0] * grid[1] * grid[2]
        # The model's mask is (B, 1, 1, S): video tokens then the valid text prefix.
        valid_text = query.shape[1] - video if attn_mask is None else int(attn_mask[0, 0, 0].sum()) - video
        return sliding_tile_attention(query, key, value, grid, windows, valid_text)

    return dispatch


def enable_sliding_tile_attention(transformer: torch.nn.Module, path: str) -> StaState:
    """Window HunyuanVideo's attention with the strategy in ``path``; returns the state the denoise loop steps."""
    if not hasattr(transformer, "single_transformer_blocks"):
        raise UserError(f"mask_strategy_file_path: sliding-tile attention is implemented for HunyuanVideo, "
                        f"not {type(transformer).__name__}", param=PARAM)
    strategy = read_mask_strategy(path)
    blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
    heads = transformer.config.num_attention_heads
    layers_seen = {layer for _, layer, _ in strategy}
    if max(layers_seen) >= len(blocks):
        raise UserError(f"mask strategy {path!r} names layer {max(layers_seen)}, but the model has {len(blocks)} "
                        f"({transformer.config.num_layers} dual-stream + {transformer.config.num_single_layers} single-stream)",
                        param=PARAM)
    state = StaState(strategy, len(blocks), heads)
    for layer, block in enumerate(blocks):
        block.attn.set_processor(SlidingTileAttnProcessor(block.attn.processor, layer, state))
    patch_t, patch = transformer.config.patch_size_t, transformer.config.patch_size

    def record_grid(module, args, kwargs):
        latents = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        _, _, f, h, w = latents.shape
        state.grid = (f // patch_t, h // patch, w // patch)

    transformer.register_forward_pre_hook(record_grid, with_kwargs=True)
    return state
