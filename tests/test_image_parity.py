"""Image models (FLUX.1, FLUX.2 [dev] and [klein], Qwen-Image, Qwen-Image-Edit(-Plus), Z-Image) against their diffusers reference pipelines, and sensitivity.

For each tiny image model our image equals the reference pipeline's on the same folder,
prompt, seed, steps and size within 2/255 per pixel; prompt, seed and guidance each move
the output by at least 20/255, so a broken text or guidance path cannot pass parity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

TOLERANCE = 2 / 255
SENSITIVITY = 20 / 255
PROMPT = "a curious calico cat playing piano"
EDIT_PROMPT = "make the cat blue"


def ours(generators, model, **settings):
    result = generators(model).generate(return_frames=True, save_output=False, **settings)
    assert result.frames.dtype == np.uint8 and result.frames.shape[0] == 1
    return result.frames[0].astype(np.float64) / 255


def reference(model, **call):
    import diffusers

    from sgld.models.registry import read_model_index
    from sgld.model_builders.tiny import materialize_tiny

    folder = materialize_tiny(model)
    cls = getattr(diffusers, read_model_index(folder)["_class_name"])
    extra = {}
    if model in ("tiny-qwen-image-edit", "tiny-qwen-image-edit-plus"):
        # No torchvision here: the processor is built from its PIL image processor (same on both sides).
        from sgld.processors import load_qwen2vl_processor

        extra["processor"] = load_qwen2vl_processor(folder / "processor")
    pipe = flux2_dev_reference(folder) if model == "tiny-flux2" else cls.from_pretrained(folder, **extra)
    pipe.set_progress_bar_config(disable=True)
    seed = call.pop("seed")
    return pipe(generator=torch.Generator().manual_seed(seed), output_type="np", **call).images[0]


def flux2_dev_reference(folder):
    """``Flux2Pipeline`` over the folder's components. Its tokenizer is a Pixtral processor, which transformers builds
    only with torchvision (absent here), so the reference gets the processor's tokenizer and chat template: for text
    the processor's ``apply_chat_template`` gives the same ids."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import AutoTokenizer, Mistral3ForConditionalGeneration

    return Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler"),
        vae=AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae"),
        text_encoder=Mistral3ForConditionalGeneration.from_pretrained(folder / "text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        transformer=Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer"))


def assert_close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b).max()
    assert diff <= TOLERANCE, f"max per-pixel difference {diff * 255:.2f}/255"


def assert_moves(a, b, what):
    diff = np.abs(a - b).max()
    assert diff >= SENSITIVITY, f"changing the {what} moved the output by only {diff * 255:.2f}/255"


def test_flux_matches_diffusers(generators):
    mine = ours(generators, "tiny-flux", prompt=PROMPT, seed=5, num_inference_steps=4, guidance_scale=3.5,
                height=64, width=64)
    ref = reference("tiny-flux", prompt=PROMPT, seed=5, num_inference_steps=4, guidance_scale=3.5, height=64, width=64)
    assert_close(mine, ref)


def test_qwen_image_matches_diffusers(generators):
    mine = ours(generators, "tiny-qwen-image", prompt=PROMPT, negative_prompt="blurry", seed=5, num_inference_steps=4,
                guidance_scale=4.0, height=64, width=64)
    ref = reference("tiny-qwen-image", prompt=PROMPT, negative_prompt="blurry", seed=5, num_inference_steps=4,
                    true_cfg_scale=4.0, height=64, width=64)
    assert_close(mine, ref)


def test_qwen_image_batched_true_cfg_equals_two_forwards(generators):
    """Padding the shorter prompt (masked) and running both branches in one forward changes nothing."""
    from sgld.stages.denoising import CFG_BATCHED, CFG_SEQUENTIAL

    settings = dict(prompt=PROMPT, negative_prompt="blurry", seed=5, num_inference_steps=3, guidance_scale=4.0,
                    height=64, width=64)
    pipeline = generators("tiny-qwen-image").pipeline
    calls = []
    handle = pipeline.components["transformer"].register_forward_pre_hook(
        lambda m, a, kw: calls.append((kw["hidden_states"].shape[0], kw["encoder_hidden_states_mask"])), with_kwargs=True)
    try:
        two = ours(generators, "tiny-qwen-image", **settings)
        pipeline.set_cfg_mode(CFG_BATCHED)
        one = ours(generators, "tiny-qwen-image", **settings)
    finally:
        pipeline.set_cfg_mode(CFG_SEQUENTIAL)
        handle.remove()
    assert [b for b, _ in calls] == [1] * 6 + [2] * 3  # 3 steps: two forwards each, then one of batch 2
    mask = calls[-1][1]
    assert mask is not None and mask.shape[0] == 2 and not mask.all()  # prompts of different lengths
    assert np.abs(one - two).max() <= 1 / 255


def test_qwen_image_edit_matches_diffusers(generators, input_png):
    from PIL import Image

    mine = ours(generators, "tiny-qwen-image-edit", prompt=EDIT_PROMPT, image_path=str(input_png), seed=5,
                num_inference_steps=2, guidance_scale=4.0, height=64, width=48)
    ref = reference("tiny-qwen-image-edit", image=Image.open(input_png).convert("RGB"), prompt=EDIT_PROMPT,
                    negative_prompt=" ", seed=5, num_inference_steps=2, true_cfg_scale=4.0, height=64, width=48)
    assert mine.shape == (64, 48, 3)
    assert_close(mine, ref)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory, input_png) -> list[str]:
    """The shared input image and a second one of another size and content (Edit-Plus composes them)."""
    from PIL import Image

    other = tmp_path_factory.mktemp("plus") / "second.png"
    Image.open(input_png).transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize((48, 48)).save(other)
    return [str(input_png), str(other)]


def plus_reference(paths, **call):
    from PIL import Image

    return reference("tiny-qwen-image-edit-plus", image=[Image.open(p).convert("RGB") for p in paths], **call)


@pytest.mark.parametrize("count", [1, 2])
def test_qwen_image_edit_plus_matches_diffusers(generators, two_inputs, count):
    paths = two_inputs[:count]
    mine = ours(generators, "tiny-qwen-image-edit-plus", prompt=EDIT_PROMPT, image_path=paths if count > 1 else paths[0],
                seed=5, num_inference_steps=2, guidance_scale=4.0, height=64, width=48)
    ref = plus_reference(paths, prompt=EDIT_PROMPT, negative_prompt=" ", seed=5, num_inference_steps=2,
                         true_cfg_scale=4.0, height=64, width=48)
    assert mine.shape == (64, 48, 3)
    assert_close(mine, ref)


def test_qwen_image_edit_plus_sensitivity_and_size(generators, two_inputs, tmp_path):
    from PIL import Image

    settings = dict(prompt=EDIT_PROMPT, image_path=two_inputs, seed=5, num_inference_steps=2, guidance_scale=4.0,
                    height=32, width=32)
    model = "tiny-qwen-image-edit-plus"
    a = ours(generators, model, **settings)
    assert_moves(a, ours(generators, model, **{**settings, "prompt": "a red fox"}), "prompt")
    assert_moves(a, ours(generators, model, **{**settings, "guidance_scale": 1.0}), "guidance scale")
    for i in range(2):  # each input image matters
        changed = tmp_path / f"changed{i}.png"
        Image.open(two_inputs[i]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(90, expand=True).save(changed)
        paths = list(two_inputs)
        paths[i] = str(changed)
        assert_moves(a, ours(generators, model, **{**settings, "image_path": paths}), f"input image {i + 1}")
    # No size given: the output takes the last image's aspect ratio (48x48: square) at about 1 MP. Asked of the
    # stage that decides it (a 1 MP tiny generation costs 7 s on the CPU; other generations run this stage).
    from sgld.request import Request
    from sgld.stages.condition_image import ConditionImageStage

    run = generators(model).check(prompt=EDIT_PROMPT, image_path=two_inputs)
    assert (run.sampling.height, run.sampling.width) == (None, None)
    req = generators(model).pipeline.stage(ConditionImageStage).forward(Request.from_sampling(run.sampling))
    assert (req.height, req.width) == (1024, 1024)


@pytest.mark.parametrize("guidance", [1.0, 4.0])  # no guidance (as the distilled klein runs), and CFG
def test_flux2_klein_matches_diffusers(generators, guidance):
    mine = ours(generators, "tiny-flux2-klein", prompt=PROMPT, seed=5, num_inference_steps=4, guidance_scale=guidance,
                height=64, width=48)
    ref = reference("tiny-flux2-klein", prompt=PROMPT, seed=5, num_inference_steps=4, guidance_scale=guidance,
                    height=64, width=48)
    assert mine.shape == (64, 48, 3)
    assert_close(mine, ref)


def test_flux2_klein_prompt_encoding_matches_diffusers(generators):
    from diffusers import Flux2KleinPipeline

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.flux2 import Flux2TextEncodingStage

    pipe = Flux2KleinPipeline.from_pretrained(materialize_tiny("tiny-flux2-klein"))
    ref, ref_ids = pipe.encode_prompt([PROMPT, "a red fox"], device="cpu")
    stage = generators("tiny-flux2-klein").pipeline.stage(Flux2TextEncodingStage)
    torch.testing.assert_close(stage.encode([PROMPT, "a red fox"]), ref, rtol=1e-5, atol=1e-5)


def test_flux2_dev_matches_diffusers(generators):
    settings = dict(prompt=PROMPT, seed=5, num_inference_steps=4, guidance_scale=4.0, height=64, width=48)
    mine = ours(generators, "tiny-flux2", **settings)
    ref = reference("tiny-flux2", **settings)
    assert mine.shape == (64, 48, 3)
    assert_close(mine, ref)


def test_flux2_dev_prompt_encoding_matches_diffusers(generators):
    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.flux2 import MistralTextEncodingStage

    pipe = flux2_dev_reference(materialize_tiny("tiny-flux2"))
    ref, _ = pipe.encode_prompt([PROMPT, "a red fox"], device="cpu")
    stage = generators("tiny-flux2").pipeline.stage(MistralTextEncodingStage)
    assert ref.shape == (2, 512, 3 * 16)  # layers 10, 20, 30 stacked
    torch.testing.assert_close(stage.encode([PROMPT, "a red fox"]), ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference_images(tmp_path_factory) -> list[str]:
    """Two reference images of different sizes and content (FLUX.2 takes sides of at least 64 pixels; the second
    is cropped to multiples of 16, as the reference does)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("flux2_refs")
    y, x = np.mgrid[0:160, 0:192]
    first = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    first[40:100, 60:120] = (250, 30, 30)
    second = (np.random.default_rng(1).random((150, 130, 3)) * 255).astype(np.uint8)
    paths = [str(folder / "first.png"), str(folder / "second.png")]
    Image.fromarray(first).save(paths[0])
    Image.fromarray(second).save(paths[1])
    return paths


@pytest.mark.parametrize("model,count", [("tiny-flux2-klein", 2), ("tiny-flux2", 1)])
def test_flux2_reference_images_match_diffusers(generators, reference_images, model, count):
    from PIL import Image

    settings = dict(prompt=PROMPT, seed=6, num_inference_steps=3, guidance_scale=4.0, height=64, width=48)
    paths = reference_images[:count]
    mine = ours(generators, model, image_path=paths if count > 1 else paths[0], **settings)
    ref = reference(model, image=[Image.open(p).convert("RGB") for p in paths], **settings)
    assert_close(mine, ref)
    without = ours(generators, model, **settings)
    assert_moves(mine, without, "reference images")
    if count == 1:
        assert_moves(mine, ours(generators, model, image_path=reference_images[1], **settings), "reference image")


def test_flux2_reference_images_are_checked_before_they_run(generators, reference_images, tmp_path):
    from PIL import Image

    from sgld.errors import UserError

    generator = generators("tiny-flux2-klein")
    small = tmp_path / "small.png"
    Image.new("RGB", (48, 100)).save(small)
    with pytest.raises(UserError, match="at least 64 pixels"):
        generator.check(prompt=PROMPT, image_path=str(small))
    with pytest.raises(UserError, match="5 images given; this model takes up to 4 input images"):
        generator.check(prompt=PROMPT, image_path=[reference_images[0]] * 5)


def test_a_distilled_flux2_klein_refuses_guidance(tmp_path, sgld_home):
    """A folder whose model_index.json says is_distilled runs one branch; a guidance scale is refused, not ignored."""
    import json
    import shutil

    from sgld import DiffGenerator
    from sgld.errors import UserError
    from sgld.model_builders.tiny import materialize_tiny

    folder = tmp_path / "klein-distilled"
    shutil.copytree(materialize_tiny("tiny-flux2-klein"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "is_distilled": True}))
    generator = DiffGenerator.from_pretrained(str(folder), precision="fp32", text_encoder_precisions=["fp32"])
    settings = dict(prompt=PROMPT, seed=5, num_inference_steps=2, height=32, width=32, save_output=False)
    assert generator.generate(guidance_scale=1.0, return_frames=True, **settings).frames.shape == (1, 32, 32, 3)
    with pytest.raises(UserError, match="step-distilled and takes no guidance"):
        generator.generate(guidance_scale=4.0, **settings)


@pytest.mark.parametrize("guidance", [0.0, 4.0])  # Turbo's default (one branch), and guided (two, batched)
def test_z_image_matches_diffusers(generators, guidance):
    mine = ours(generators, "tiny-z-image", prompt=PROMPT, negative_prompt="blurry", seed=5, num_inference_steps=4,
                guidance_scale=guidance, height=64, width=48)
    ref = reference("tiny-z-image", prompt=PROMPT, negative_prompt="blurry", seed=5, num_inference_steps=4,
                    guidance_scale=guidance, height=64, width=48)
    assert mine.shape == (64, 48, 3)
    assert_close(mine, ref)


def test_z_image_prompt_encoding_matches_diffusers(generators):
    from diffusers import ZImagePipeline

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.z_image_text import ZImageTextEncodingStage

    pipe = ZImagePipeline.from_pretrained(materialize_tiny("tiny-z-image"))
    texts = [PROMPT, "a red fox"]
    ref = pipe.encode_prompt(list(texts), device="cpu", do_classifier_free_guidance=False)[0]
    mine = generators("tiny-z-image").pipeline.stage(ZImageTextEncodingStage).encode(texts)
    assert [m.shape[1] for m in mine] == [r.shape[0] for r in ref]  # each prompt's real tokens, no padding
    for m, r in zip(mine, ref):
        torch.testing.assert_close(m[0], r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model,base,guided",
    [
        ("tiny-flux", dict(guidance_scale=3.5), dict(guidance_scale=1.0)),
        ("tiny-qwen-image", dict(guidance_scale=4.0), dict(guidance_scale=2.0)),
        ("tiny-z-image", dict(guidance_scale=0.0), dict(guidance_scale=3.0)),
        ("tiny-flux2-klein", dict(guidance_scale=4.0), dict(guidance_scale=1.0)),
        ("tiny-flux2", dict(guidance_scale=4.0), dict(guidance_scale=1.5)),
    ],
)
def test_text_to_image_sensitivity(generators, model, base, guided):
    settings = dict(prompt=PROMPT, seed=5, num_inference_steps=4, height=64, width=64, **base)
    a = ours(generators, model, **settings)
    assert_moves(a, ours(generators, model, **{**settings, "prompt": "a red fox running through fresh snow"}), "prompt")
    assert_moves(a, ours(generators, model, **{**settings, "seed": 6}), "seed")
    assert_moves(a, ours(generators, model, **{**settings, **guided}), "guidance scale")


def test_edit_sensitivity(generators, input_png, tmp_path):
    from PIL import Image

    settings = dict(prompt=EDIT_PROMPT, image_path=str(input_png), seed=5, num_inference_steps=2,
                    guidance_scale=4.0, height=32, width=32)
    a = ours(generators, "tiny-qwen-image-edit", **settings)
    assert_moves(a, ours(generators, "tiny-qwen-image-edit", **{**settings, "prompt": "a red fox"}), "prompt")
    # The seed's path (initial noise) is Qwen-Image's, whose seed sensitivity is tested above.
    assert_moves(a, ours(generators, "tiny-qwen-image-edit", **{**settings, "guidance_scale": 1.0}), "guidance scale")
    other = tmp_path / "other.png"
    Image.open(input_png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    assert_moves(a, ours(generators, "tiny-qwen-image-edit", **{**settings, "image_path": str(other)}), "input image")


def test_qwen_prompt_encoding_matches_diffusers(generators):
    from diffusers import QwenImagePipeline

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.qwen_text import QwenTextEncodingStage

    stage = next(s for s in generators("tiny-qwen-image").pipeline.stages if isinstance(s, QwenTextEncodingStage))
    mine = stage.encode("a red fox, in the snow")
    pipe = QwenImagePipeline.from_pretrained(materialize_tiny("tiny-qwen-image"))
    ref, ref_mask = pipe.encode_prompt("a red fox, in the snow", device="cpu")
    assert ref_mask is None and mine["encoder_hidden_states_mask"] is None
    torch.testing.assert_close(mine["encoder_hidden_states"], ref)


def test_tiny_qwen_tokenizer_cuts_the_template_where_the_prompt_starts(sgld_home):
    """The reference drops 34 (T2I) / 64 (Edit) template tokens: the cut must land on the prompt."""
    from transformers import AutoTokenizer

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.qwen_text import QWEN_IMAGE_EDIT_TEMPLATE, QWEN_IMAGE_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(materialize_tiny("tiny-qwen-image") / "tokenizer")
    for template in (QWEN_IMAGE_TEMPLATE, QWEN_IMAGE_EDIT_TEMPLATE):
        ids = tokenizer(template.text.format("zebra")).input_ids
        kept = tokenizer.decode(ids[template.drop_tokens:])
        assert kept.startswith("zebra") or kept.startswith("<|vision_start|>"), kept
    edit = tokenizer(QWEN_IMAGE_EDIT_TEMPLATE.text.format("zebra")).input_ids
    assert tokenizer.decode(edit[64:]).startswith("<|vision_start|><|image_pad|><|vision_end|>zebra")


def test_edit_output_size_follows_the_input_png(generators, input_png):
    """No height/width: the output takes the ~1 MP condition size of the input's aspect ratio (56x40 -> 1216x864)."""
    from sgld.request import Request
    from sgld.stages.condition_image import ConditionImageStage

    gen = generators("tiny-qwen-image-edit")
    stage = gen.pipeline.stage(ConditionImageStage)
    req = stage(Request.from_sampling(gen.run.sampling, prompt="x", height=None, width=None, num_frames=1,
                                      image_path=str(input_png)))
    assert (req.width, req.height) == (1216, 864)
    assert [image.size for image in req.condition_image] == [(1216, 864)]  # one input image
    req = stage(Request.from_sampling(gen.run.sampling, prompt="x", height=64, width=48, num_frames=1,
                                      image_path=str(input_png)))
    assert (req.width, req.height) == (48, 64) and [image.size for image in req.condition_image] == [(1216, 864)]
