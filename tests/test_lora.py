"""LoRA adapters: equal to diffusers' load_lora_weights + set_adapters; merged = dynamic; exact unmerge; bad input refused.

Adapters are made here with PEFT on the tiny models (tests/support/lora.py), large enough to move the
output by at least 10/255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sgld.errors import UserError
from tests.support.lora import make_lora, to_kohya_wan

TOLERANCE = 2
MOVES = 10
VIDEO = dict(height=64, width=64, num_frames=9)
IMAGE = dict(height=64, width=64)
# model -> (our settings, the reference call's settings where they differ, its output attribute)
MODELS = {
    "tiny-wan-t2v": (dict(VIDEO, guidance_scale=5.0), {}, "frames"),
    "tiny-wan22-t2v": (dict(VIDEO, guidance_scale=5.0, guidance_scale_2=3.0), {}, "frames"),
    "tiny-hunyuan": (dict(VIDEO, guidance_scale=6.0), {}, "frames"),
    "tiny-flux": (dict(IMAGE, guidance_scale=3.5), {}, "images"),
    # Qwen-Image's guidance is true CFG: diffusers calls it true_cfg_scale.
    "tiny-qwen-image": (dict(IMAGE, guidance_scale=4.0, negative_prompt="blurry"),
                        dict(IMAGE, true_cfg_scale=4.0, negative_prompt="blurry"), "images"),
    "tiny-z-image": (dict(IMAGE, guidance_scale=3.0, negative_prompt="blurry"), {}, "images"),
    "tiny-flux2-klein": (dict(IMAGE, guidance_scale=4.0), {}, "images"),
}
PROMPT = "a red fox running through snow"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, sgld_home):
    """One adapter per (model, seed), made once: its file."""
    from sgld.model_builders.tiny import materialize_tiny

    root = tmp_path_factory.mktemp("loras")
    made = {}

    def get(model: str, seed: int = 1, subfolder: str = "transformer") -> Path:
        key = (model, seed, subfolder)
        if key not in made:
            made[key] = make_lora(materialize_tiny(model), root / f"{model}-{seed}-{subfolder}", seed, b_scale=1.0,
                                  subfolder=subfolder)
        return made[key]

    return get


def ours(model: str, steps: int = 2, loras=None, **options) -> np.ndarray:
    from sgld import DiffGenerator

    settings = MODELS[model][0]
    generator = DiffGenerator.from_pretrained(model, **options)
    frames = generator.generate(PROMPT, seed=3, num_inference_steps=steps, return_frames=True, save_output=False,
                                loras=loras, **settings).frames
    return frames.astype(int)


def reference(model: str, loads: list[tuple[Path, str, bool]], scales: list[float]) -> np.ndarray:
    """diffusers' pipeline on the same folder: load_lora_weights (into transformer_2 when asked) + set_adapters."""
    import diffusers

    from sgld.models.registry import read_model_index
    from sgld.model_builders.tiny import materialize_tiny

    folder = materialize_tiny(model)
    pipe = getattr(diffusers, read_model_index(folder)["_class_name"]).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    for file, name, into_second in loads:
        pipe.load_lora_weights(str(file), adapter_name=name, **({"load_into_transformer_2": True} if into_second else {}))
    pipe.set_adapters(list(dict.fromkeys(name for _, name, _ in loads)), scales)
    ours_settings, theirs, attribute = MODELS[model]
    settings = theirs or ours_settings
    out = getattr(pipe(prompt=PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(3),
                       output_type="np", **settings), attribute)[0]
    frames = np.asarray(out)[None] if attribute == "images" else np.asarray(out)  # ours: (frames, H, W, 3)
    return (frames * 255).round().astype(int)


def moved_and_equal(base: np.ndarray, mine: np.ndarray, ref: np.ndarray) -> None:
    assert mine.shape == ref.shape == base.shape
    assert np.abs(mine - base).max() >= MOVES, "the adapter barely moved the output"
    assert np.abs(mine - ref).max() <= TOLERANCE, f"max difference to diffusers {np.abs(mine - ref).max()}/255"


@pytest.mark.parametrize("model,target", [("tiny-wan-t2v", "transformer"), ("tiny-wan22-t2v", "all"),
                                          ("tiny-wan22-t2v", "transformer_2"), ("tiny-hunyuan", "transformer"),
                                          ("tiny-flux", "transformer"), ("tiny-qwen-image", "transformer"),
                                          ("tiny-z-image", "transformer"), ("tiny-flux2-klein", "transformer")])
def test_one_adapter_equals_diffusers(model, target, adapters):
    file = adapters(model)
    base = ours(model)
    mine = ours(model, lora_path=str(file), lora_scale=0.8, lora_target=target)
    loads = [(file, "a", False)] if target != "transformer_2" else []
    if target in ("all", "transformer_2"):
        loads.append((file, "a", True))
    moved_and_equal(base, mine, reference(model, loads, [0.8]))


def test_two_stacked_adapters_with_their_own_scales(adapters):
    first, second = adapters("tiny-wan-t2v", 1), adapters("tiny-wan-t2v", 2)
    base = ours("tiny-wan-t2v")
    mine = ours("tiny-wan-t2v", lora_path=[str(first), str(second)], lora_scale=[0.5, 1.2], lora_nickname=["a", "b"])
    moved_and_equal(base, mine, reference("tiny-wan-t2v", [(first, "a", False), (second, "b", False)], [0.5, 1.2]))


def test_merged_equals_dynamic_and_unmerging_restores_the_weights_exactly(adapters):
    from sgld import DiffGenerator

    file = adapters("tiny-wan-t2v")
    settings = dict(MODELS["tiny-wan-t2v"][0], seed=3, num_inference_steps=2, return_frames=True, save_output=False)
    merged = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_path=str(file), lora_merge_mode="merge")
    dynamic = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_path=str(file), lora_merge_mode="dynamic")
    assert merged.pipeline.loras.fused and not dynamic.pipeline.loras.fused
    with_lora = merged.generate(PROMPT, **settings).frames.astype(int)
    assert np.abs(with_lora - dynamic.generate(PROMPT, **settings).frames.astype(int)).max() <= TOLERANCE
    base = DiffGenerator.from_pretrained("tiny-wan-t2v").generate(PROMPT, **settings).frames
    assert np.array_equal(merged.generate(PROMPT, loras=[], **settings).frames, base)  # unmerged: bit-exact
    assert np.array_equal(merged.generate(PROMPT, **settings).frames.astype(int), with_lora)  # and back


def test_a_kohya_file_equals_its_diffusers_twin(adapters, tmp_path):
    file = adapters("tiny-wan-t2v")
    kohya = to_kohya_wan(file, tmp_path / "kohya" / "fox_style.safetensors")
    assert np.array_equal(ours("tiny-wan-t2v", lora_path=str(kohya)), ours("tiny-wan-t2v", lora_path=str(file)))


def test_bad_adapters_are_refused_before_the_model_changes(adapters, tmp_path):
    from safetensors.torch import load_file, save_file

    from sgld import DiffGenerator

    settings = dict(MODELS["tiny-wan-t2v"][0], seed=3, num_inference_steps=2, return_frames=True, save_output=False)
    good = adapters("tiny-wan-t2v")
    generator = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_path=str(good), lora_merge_mode="dynamic",
                                              lora_dir=str(tmp_path))
    before = generator.generate(PROMPT, **settings).frames
    pickle = tmp_path / "old.bin"
    pickle.write_bytes(b"not read")
    flux = tmp_path / "flux.safetensors"
    flux.write_bytes(adapters("tiny-flux").read_bytes())
    narrow = tmp_path / "narrow.safetensors"
    state = load_file(str(good))
    key = next(k for k in state if k.endswith("attn1.to_q.lora_A.weight"))
    save_file({**state, key: torch.zeros(state[key].shape[0], state[key].shape[1] + 3)}, str(narrow))
    cases = [
        ([{"name": "missing.safetensors"}], "no LoRA 'missing.safetensors' in the LoRA folder"),
        ([{"name": "old.bin"}], "pickle file"),
        ([{"name": "../outside.safetensors"}], "outside the LoRA folder"),
        ([{"name": "flux.safetensors"}], "layer\\(s\\) that transformer does not have"),
        ([{"name": "narrow.safetensors"}], "does not fit transformer: blocks.0.attn1.to_q"),
        ([{"name": "flux.safetensors", "scale": float("nan")}], "not a finite number"),
        ([{"name": "narrow.safetensors", "target": "transformer_2"}], "this model has no transformer_2"),
    ]
    for loras, message in cases:
        with pytest.raises(UserError, match=message):
            generator.generate(PROMPT, loras=loras, **settings)
        assert np.array_equal(generator.generate(PROMPT, **settings).frames, before), loras
    with pytest.raises(UserError, match="does not exist"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", lora_path=str(tmp_path / "nope.safetensors"))
    with pytest.raises(UserError, match="unknown option 'lora_path'"):  # per request: `loras`, not a load option
        generator.generate(PROMPT, lora_path=str(good), **settings)


def test_request_adapters_come_from_the_lora_dir_with_a_bounded_cache(adapters, tmp_path):
    from sgld import DiffGenerator

    for seed in (1, 2):
        (tmp_path / f"style{seed}.safetensors").write_bytes(adapters("tiny-wan-t2v", seed).read_bytes())
    settings = dict(MODELS["tiny-wan-t2v"][0], seed=3, num_inference_steps=2, return_frames=True, save_output=False)
    server_like = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_dir=str(tmp_path), max_loaded_loras=1)
    assert not server_like.pipeline.loras.merge  # auto: dynamic when requests may choose
    one = server_like.generate(PROMPT, loras=[{"name": "style1", "scale": 0.7}], **settings).frames
    two = server_like.generate(PROMPT, loras=[{"name": "style2.safetensors"}], **settings).frames
    # The bound: the older adapter was dropped (keys are name + digest of file and DiTs; the names are what count).
    assert [a.name for a in server_like.pipeline.loras.loaded.values()] == ["style2"]
    assert np.array_equal(one, ours("tiny-wan-t2v", lora_path=str(tmp_path / "style1.safetensors"),
                                    lora_scale=0.7, lora_merge_mode="dynamic").astype(np.uint8))
    assert np.array_equal(two, ours("tiny-wan-t2v", lora_path=str(tmp_path / "style2.safetensors"),
                                    lora_merge_mode="dynamic").astype(np.uint8))
    assert np.array_equal(server_like.generate(PROMPT, **settings).frames,
                          DiffGenerator.from_pretrained("tiny-wan-t2v").generate(PROMPT, **settings).frames)


def test_compiled_switching_swaps_adapters_without_recompiling(adapters, tmp_path):
    """--enable-torch-compile with a LoRA dir: requests switch adapters (and scales, and none) with no recompile,
    each output equal to the eager model's with the same adapter."""
    from torch._dynamo.utils import counters

    from sgld import DiffGenerator

    for seed, name in ((1, "a"), (2, "b")):
        (tmp_path / f"{name}.safetensors").write_bytes(adapters("tiny-wan-t2v", seed).read_bytes())
    settings = dict(MODELS["tiny-wan-t2v"][0], seed=3, num_inference_steps=2, return_frames=True, save_output=False)
    compiled = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_dir=str(tmp_path), enable_torch_compile=True)
    eager = DiffGenerator.from_pretrained("tiny-wan-t2v", lora_dir=str(tmp_path))
    requests = [[{"name": "a"}], [{"name": "b", "scale": 0.6}], [], [{"name": "a", "scale": 1.3}]]
    compiled.generate(PROMPT, loras=requests[0], **settings)  # compiles the blocks once
    graphs = counters["stats"]["unique_graphs"]
    for loras in requests:
        ours_frames = compiled.generate(PROMPT, loras=loras, **settings).frames.astype(int)
        reference = eager.generate(PROMPT, loras=loras, **settings).frames.astype(int)
        assert np.abs(ours_frames - reference).max() <= TOLERANCE, loras
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile for any switch
    with pytest.raises(UserError, match="one LoRA adapter at a time"):
        compiled.generate(PROMPT, loras=[{"name": "a"}, {"name": "b"}], **settings)
