"""MiniMax-H3's request rules (sgld/minimax_h3_rules.py) give diffusers' answers without torch: the canvas for every
aspect, the 17n+5 frame snap and its 5-15 s window, seconds through the same arithmetic, the workflow a request's
inputs select; refusals name the nearest valid values."""

from __future__ import annotations

import json
import math

import pytest

from sgld.errors import UserError
from sgld.minimax_h3_rules import (
    FPS, MAX_REFERENCE_IMAGES, Geometry, Workflow, check_distilled, check_reference_count, check_steps, workflow_of,
)

RELEASED = Geometry(canvas_multiple=32, short_edge=768, max_pixels=768 * 1344, reference_short_edge=2048,
                    frames_per_chunk=17, latents_per_chunk=5)


def _reference():
    from diffusers.modular_pipelines.minimax_h3 import modular_pipeline

    return modular_pipeline


def _reference_accepts(num_frames: int) -> bool:
    """The reference PrepareLayout step's frame rule: the aligned count's duration within 5-15 s."""
    aligned = _reference().align_num_frames(num_frames, 17, 5)
    return 5.0 <= aligned / FPS <= 15.0


def test_canvas_equals_the_reference_for_every_aspect():
    ref = _reference()
    aspects = [(16, 9), (9, 16), (1, 1), (4, 3), (3, 4), (4, 1), (1, 4), (21, 9), (1344, 768), (1000, 999)]
    aspects += [(w, h) for w in range(100, 2100, 97) for h in range(100, 2100, 113) if 0.25 <= w / h <= 4]
    for geometry, short, cap in ((RELEASED, 768, 768 * 1344), (Geometry(32, 32, 32 * 56, 64, 17, 5), 32, 32 * 56)):
        for w, h in aspects:
            assert geometry.canvas_for_aspect(w, h) == ref.resolve_canvas_size(w, h, 32, short, cap), (w, h)
    assert RELEASED.canvas(None, None) == (768, 1344)
    assert RELEASED.canvas(None, None, keyframe_size=(768, 1344)) == (1344, 768)


def test_frames_equal_the_reference_snap_and_window():
    ref = _reference()
    for n in range(1, 400):
        assert RELEASED.align(n) == ref.align_num_frames(n, 17, 5), n
        if _reference_accepts(n):
            assert RELEASED.frames(n) == ref.align_num_frames(n, 17, 5)
        else:
            with pytest.raises(UserError, match="nearest valid"):
                RELEASED.frames(n)
    valid = RELEASED.valid_frames()
    assert valid[0] == 124 and valid[-1] == 345 and len(valid) == 14
    for n in valid:
        assert RELEASED.latent_frames(n) == ref.video_latent_num_frames(n, 17, 5)
        assert RELEASED.audio_latents(n) == ref.audio_latent_num_frames(n)
    assert RELEASED.latent_frames(124) == 37 and RELEASED.audio_latents(124) == 207


def test_seconds_map_through_the_model_arithmetic():
    """A server's ``seconds`` becomes round(s * 24) frames (the family's temporal factor is 1), which the model's
    rule snaps up: 5 s -> 124, 8 s -> 192, 10 s -> 243; 15 s snaps past the window and names 345."""
    assert [RELEASED.frames(round(s * FPS)) for s in (5, 8, 10, 14)] == [124, 192, 243, 345]
    with pytest.raises(UserError, match=r"num_frames=360 snaps up to 362 .* nearest valid: 345"):
        RELEASED.frames(round(15 * FPS))


def test_refusals_name_the_value_and_the_nearest_valid():
    with pytest.raises(UserError, match="num_frames=100 snaps up to 107.*nearest valid: 124") as err:
        RELEASED.frames(100)
    assert err.value.param == "num_frames"
    with pytest.raises(UserError, match="num_frames=360 snaps up to 362.*nearest valid: 345"):
        RELEASED.frames(360)
    with pytest.raises(UserError, match="width=1000 must be a multiple of 32.*nearest valid: 992 or 1024"):
        RELEASED.canvas(768, 1000)
    with pytest.raises(UserError, match="height given alone"):
        RELEASED.canvas(768, None)
    with pytest.raises(UserError, match="image_path is 1000x200 .* 1:4 to 4:1") as err:
        RELEASED.canvas(None, None, keyframe_size=(1000, 200))
    assert err.value.param == "image_path"
    with pytest.raises(UserError, match=f"at most {MAX_REFERENCE_IMAGES}"):
        check_reference_count(MAX_REFERENCE_IMAGES + 1)
    check_reference_count(MAX_REFERENCE_IMAGES)
    for kwargs, param in ((dict(guidance_scale=5.0), "guidance_scale"), (dict(negative_prompt="blurry"), "negative_prompt"),
                          (dict(flow_shift=5.0), "flow_shift"), (dict(cfg_parallel=True), "cfg_parallel")):
        args = dict(guidance_scale=None, negative_prompt=None, flow_shift=None) | kwargs
        with pytest.raises(UserError, match="MiniMax-H3") as err:
            check_distilled(**args)
        assert err.value.param == param
    check_distilled(None, "", None)
    with pytest.raises(UserError, match="num_inference_steps=1"):
        check_steps(1)


def test_workflow_follows_the_inputs():
    assert workflow_of(None, None, []) is Workflow.t2va
    assert workflow_of("a.png", None, []) is Workflow.fl2va
    assert workflow_of(None, "z.png", []) is Workflow.fl2va
    assert workflow_of(None, None, ["r.png"]) is Workflow.ref2va
    assert Workflow.ref2va.partition == "transformer_ref" and Workflow.fl2va.partition == "transformer"
    with pytest.raises(UserError, match="keyframes or references, not both"):
        workflow_of("a.png", None, ["r.png"])


def test_geometry_reads_the_folder(tmp_path):
    """The released configs (conversion script) give the released geometry; a ref2va-only folder reads its partition."""
    (tmp_path / "vae").mkdir()
    (tmp_path / "transformer_ref").mkdir()
    (tmp_path / "modular_model_index.json").write_text(json.dumps(
        dict(canvas_short_edge=768, canvas_max_pixels=768 * 1344, reference_image_short_edge=2048)))
    (tmp_path / "vae" / "config.json").write_text(json.dumps(
        dict(spatial_downsample_factors=[2, 2, 2, 2, 1, 1], temporal_downsample_factors=[1, 2, 2, 1, 1, 1],
             clip_length=17)))
    (tmp_path / "transformer_ref" / "config.json").write_text(json.dumps(dict(patch_size=[1, 2, 2])))
    assert Geometry.of_folder(tmp_path) == RELEASED
    assert RELEASED.latents_per_chunk == math.ceil(17 / 4)
