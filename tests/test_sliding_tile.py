"""Sliding-tile attention: windows as FastVideo defines them, checked against dense masked attention."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from sgld.errors import UserError
from sgld.levers.sliding_tile import read_mask_strategy, sliding_tile_attention

GRID, TILE = (3, 4, 6), (1, 2, 2)  # 72 video tokens in 3 x 2 x 3 tiles
VIDEO, TEXT, PAD = 72, 5, 3


def qkv(heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, VIDEO + TEXT + PAD, heads, 8, generator=g) for _ in range(3)]


def dense(q, k, v, allowed):
    """SDPA with an explicit (H, S, S) boolean mask."""
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           attn_mask=allowed[None])
    return out.transpose(1, 2)


def reference_mask(windows, grid=GRID, tile=TILE):
    """The STA rule written out token by token (window centre clamped inside the tile grid)."""
    counts = [-(-n // s) for n, s in zip(grid, tile)]
    coords = list(itertools.product(*(range(n) for n in grid)))
    total = VIDEO + TEXT + PAD
    allowed = torch.zeros(len(windows), total, total, dtype=torch.bool)
    for h, window in enumerate(windows):
        for qi in range(total):
            for ki in range(VIDEO + TEXT):  # padding keys never
                if qi >= VIDEO or ki >= VIDEO:
                    allowed[h, qi, ki] = True
                    continue
                ok = True
                for axis in range(3):
                    qt, kt, half = coords[qi][axis] // tile[axis], coords[ki][axis] // tile[axis], window[axis] // 2
                    centre = min(max(qt, half), counts[axis] - 1 - half)
                    ok &= abs(centre - kt) <= half
                allowed[h, qi, ki] = ok
    return allowed


def test_a_window_covering_every_tile_is_dense_attention():
    q, k, v = qkv()
    windows = torch.tensor([[5, 5, 5], [7, 3, 7]])  # >= 2 x tiles per axis - 1: everything
    ours = sliding_tile_attention(q, k, v, GRID, windows, TEXT, TILE)
    padding_masked = torch.ones(2, VIDEO + TEXT + PAD, VIDEO + TEXT + PAD, dtype=torch.bool)
    padding_masked[:, :, VIDEO + TEXT:] = False
    torch.testing.assert_close(ours, dense(q, k, v, padding_masked), rtol=1e-5, atol=1e-5)


def test_a_small_window_changes_only_what_it_should():
    q, k, v = qkv()
    windows = [[1, 1, 1], [3, 1, 3]]  # head 0: own tile only; head 1: a 3 x 1 x 3 tile window
    ours = sliding_tile_attention(q, k, v, GRID, torch.tensor(windows), TEXT, TILE)
    torch.testing.assert_close(ours, dense(q, k, v, reference_mask(windows)), rtol=1e-5, atol=1e-5)
    full = dense(q, k, v, reference_mask([[5, 5, 5], [5, 5, 5]]))
    # Text queries still see everything: unchanged. Video queries: changed.
    torch.testing.assert_close(ours[:, VIDEO:], full[:, VIDEO:], rtol=1e-5, atol=1e-5)
    assert (ours[:, :VIDEO] - full[:, :VIDEO]).abs().amax() > 1e-2


def test_windowed_hunyuan_equals_dense_when_the_window_covers_all(tmp_path, sgld_home):
    """The whole model with a covering strategy equals dense; a 1-tile strategy changes the video."""
    from sgld import DiffGenerator

    # 3 x 4 x 9 video tokens: two 6x8x8 tiles side by side.
    settings = dict(seed=3, num_inference_steps=2, height=64, width=144, num_frames=9, return_frames=True,
                    save_output=False)
    dense_frames = DiffGenerator.from_pretrained("tiny-hunyuan").generate("a red fox", **settings).frames
    covering, narrow = tmp_path / "covering.json", tmp_path / "narrow.json"
    keys = [f"{t}_{layer}_{h}" for t in range(2) for layer in range(2) for h in range(2)]
    covering.write_text(json.dumps({key: [9, 9, 9] for key in keys}))
    narrow.write_text(json.dumps({key: [1, 1, 1] for key in keys}))  # each token sees its own tile only
    difference = {}
    for path in (covering, narrow):
        frames = DiffGenerator.from_pretrained("tiny-hunyuan", mask_strategy_file_path=str(path)).generate(
            "a red fox", **settings).frames
        difference[path.stem] = np.abs(frames.astype(int) - dense_frames).max()
    assert difference["covering"] <= 1 and difference["narrow"] >= 10, difference


@pytest.mark.parametrize("content,message", [
    ("not json", "not valid JSON"),
    ("{}", "non-empty mapping"),
    ('{"0_0": [1, 1, 1]}', "is not \"step_layer_head\""),
    ('{"0_0_0": [1, 1]}', "three window sizes"),
    ('{"0_0_0": [0, 1, 1]}', "three window sizes"),
])
def test_bad_strategy_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "strategy.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_mask_strategy(str(path))


def test_a_strategy_that_misses_a_step_is_refused_before_work(tmp_path, sgld_home):
    from sgld import DiffGenerator

    path = tmp_path / "one_step.json"
    path.write_text(json.dumps({f"0_{layer}_{h}": [1, 1, 1] for layer in range(2) for h in range(2)}))
    gen = DiffGenerator.from_pretrained("tiny-hunyuan", mask_strategy_file_path=str(path))
    with pytest.raises(UserError, match="no window for step 1, layer 0, head 0"):
        gen.generate("a fox", num_inference_steps=2, save_output=False)


def test_other_models_refuse_a_strategy(tmp_path, sgld_home):
    from sgld import DiffGenerator

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"0_0_0": [1, 1, 1]}))
    with pytest.raises(UserError, match="implemented for HunyuanVideo"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", mask_strategy_file_path=str(path))
