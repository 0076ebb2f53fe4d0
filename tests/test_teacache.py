"""TeaCache: its skip decisions equal a step-by-step reference computation of the criterion from tensors captured with
plain forward hooks (not through the lever); threshold 0 gives exactly the uncached output; requests do not leak;
families without published coefficients are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgld import DiffGenerator
from sgld.errors import UserError

WAN = dict(prompt="a red fox", negative_prompt="blurry", height=32, width=32, num_frames=5, num_inference_steps=12,
           guidance_scale=5.0, seed=5, save_output=False, return_frames=True)
FLUX = dict(prompt="a curious calico cat", height=64, width=64, num_inference_steps=12, guidance_scale=3.5, seed=5,
            save_output=False, return_frames=True)
# The published coefficients, written out here so the reference does not read the lever's table.
WAN_1_3B_RET = [-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02]
FLUX_COEFFICIENTS = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_decisions(modulated: list[torch.Tensor], coefficients, window: tuple[int, int], threshold: float):
    """TeaCache's rule, step by step: skip while the accumulated rescaled relative L1 change stays below the threshold."""
    decisions, accumulated, previous = [], 0.0, None
    for step, current in enumerate(modulated):
        skip = False
        if window[0] <= step < window[1] and previous is not None and step > 0:
            relative = ((current - previous).abs().mean() / previous.abs().mean()).item()
            accumulated += float(np.polyval(coefficients, relative))
            skip = accumulated < threshold
        if not skip:
            accumulated = 0.0
        decisions.append(skip)
        previous = current
    return decisions


def test_wan_decisions_equal_the_reference():
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v", cache="teacache", teacache_thresh=0.05)
    transformer = gen.pipeline.components["transformer"]
    projections = []  # Wan2.1 1.3B with ret_steps: the time projection the blocks get (one per step: CFG batched)
    handle = transformer.condition_embedder.register_forward_hook(lambda m, i, out: projections.append(out[1].clone()))
    try:
        result = gen.generate(**WAN)
    finally:
        handle.remove()
    mine = [d.skipped for d in result.step_cache["decisions"]]
    assert mine == reference_decisions(projections, WAN_1_3B_RET, (5, 12), 0.05)
    assert result.step_cache["profile"].startswith("Wan2.1-T2V-1.3B") and not any(mine[:5]) and any(mine)


def test_flux_decisions_equal_the_reference():
    gen = DiffGenerator.from_pretrained("tiny-flux", cache="teacache", teacache_thresh=0.3)
    transformer = gen.pipeline.components["transformer"]
    hidden, temb = [], []  # what the first double block gets: the embedded image tokens and the time embedding
    handles = [transformer.x_embedder.register_forward_hook(lambda m, i, out: hidden.append(out.clone())),
               transformer.time_text_embed.register_forward_hook(lambda m, i, out: temb.append(out.clone()))]
    try:
        result = gen.generate(**FLUX)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        modulated = [transformer.transformer_blocks[0].norm1(h, emb=t)[0] for h, t in zip(hidden, temb)]
    mine = [d.skipped for d in result.step_cache["decisions"]]
    assert mine == reference_decisions(modulated, FLUX_COEFFICIENTS, (1, 11), 0.3)
    assert 0 < sum(mine) < len(mine) - 2  # some forwards skipped, some computed
    assert result.step_cache["cached"]["cond"] == sum(mine)


@pytest.mark.parametrize("model,settings", [("tiny-wan-t2v", WAN), ("tiny-flux", FLUX)])
def test_threshold_zero_is_the_uncached_output(model, settings):
    plain = DiffGenerator.from_pretrained(model).generate(**settings).frames
    zero = DiffGenerator.from_pretrained(model, cache="teacache", teacache_thresh=0.0).generate(**settings)
    assert np.array_equal(zero.frames, plain) and not zero.step_cache["cached"]


def test_a_request_setting_does_not_leak():
    gen = DiffGenerator.from_pretrained("tiny-flux", teacache_thresh=0.3)
    runs = [gen.generate(**FLUX, enable_teacache=on) for on in (True, False, True)]
    solo = DiffGenerator.from_pretrained("tiny-flux", cache="teacache", teacache_thresh=0.3).generate(**FLUX)
    plain = DiffGenerator.from_pretrained("tiny-flux").generate(**FLUX)
    assert np.array_equal(runs[0].frames, solo.frames) and np.array_equal(runs[2].frames, solo.frames)
    assert np.array_equal(runs[1].frames, plain.frames) and runs[1].step_cache is None
    assert not np.array_equal(solo.frames, plain.frames)  # forwards were skipped


def test_sequence_parallel_ranks_take_one_processs_decisions_and_frames():
    """Ulysses-2 on Wan (split at the first block: the residual is taken on the shard the block sees), ring-2 on
    FLUX (split at the input: the criterion's sums are summed over the ranks) and CFG parallel on Wan (a branch per
    rank), on 2 gloo ranks of one launch: the steps computed and cached, and the frames, of one process. (One
    process batches Wan's two branches into one forward; Wan's criterion reads the timestep's projection, the same
    for both prompts, so the cond rank's decisions are the batched forward's.)"""
    from tests.support.one_group import generate_on_one_group

    cases = [("tiny-wan-t2v", WAN, 0.05, dict(ulysses_degree=2)), ("tiny-flux", FLUX, 0.3, dict(ring_degree=2)),
             ("tiny-wan-t2v", WAN, 0.05, dict(enable_cfg_parallel=True))]
    ones = {model: DiffGenerator.from_pretrained(model, cache="teacache", teacache_thresh=thresh).generate(**settings)
            for model, settings, thresh, _ in cases}
    ranks = generate_on_one_group([{**settings, "model_path": model, "cache": "teacache", "teacache_thresh": thresh,
                                    "num_gpus": 2, **layout} for model, settings, thresh, layout in cases])
    for (model, _, _, layout), two in zip(cases, ranks):
        one = ones[model]
        skipped = [d.skipped for d in two.step_cache["decisions"]]
        assert skipped == [d.skipped for d in one.step_cache["decisions"]] and any(skipped), layout
        diff = np.abs(two.frames.astype(int) - one.frames.astype(int)).max()
        assert diff <= 2, f"{model} {layout}: {diff}/255"


def test_what_is_refused():
    with pytest.raises(UserError, match="TeaCache: no published coefficients for qwen_image"):
        DiffGenerator.from_pretrained("tiny-qwen-image", cache="teacache")
    gen = DiffGenerator.from_pretrained("tiny-qwen-image")
    with pytest.raises(UserError, match="no published coefficients"):
        gen.generate(prompt="a cat", enable_teacache=True)
    with pytest.raises(UserError, match="one step cache"):
        DiffGenerator.from_pretrained("tiny-flux", enable_teacache=True, enable_cache_dit=True)
    with pytest.raises(UserError, match="teacache_thresh must be >= 0"):
        DiffGenerator.from_pretrained("tiny-flux", teacache_thresh=-1.0)


@pytest.mark.parametrize("dims,size,row", [((16, 16, 12, 128), (480, 832), "Wan2.1-T2V-1.3B"),
                                           ((16, 16, 40, 128), (720, 1280), "Wan2.1-T2V-14B"),
                                           ((36, 16, 40, 128), (480, 832), "Wan2.1-I2V-14B-480P"),
                                           ((36, 16, 40, 128), (720, 1280), "Wan2.1-I2V-14B-720P")])
def test_wan_rows_follow_the_released_configs(dims, size, row):
    from types import SimpleNamespace

    from sgld.levers.teacache import wan_profile

    in_channels, out_channels, heads, head_dim = dims
    config = SimpleNamespace(in_channels=in_channels, out_channels=out_channels, num_attention_heads=heads,
                             attention_head_dim=head_dim)
    assert wan_profile(config, *size).name.startswith(row)
