"""HunyuanVideo-1.5 text-to-video and image-to-video: parity with diffusers, prompt encoding, sensitivity, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgld.errors import UserError

TOLERANCE = 2 / 255
SETTINGS = dict(seed=3, num_inference_steps=4, guidance_scale=6.0, num_frames=9, negative_prompt="blurry")
PROMPT = 'a red fox next to a sign that says "OPEN"'  # the quoted word goes through ByT5 too


def ours(generators, model, prompt=PROMPT, **overrides):
    return generators(model).generate(prompt, return_frames=True, save_output=False,
                                      **{**SETTINGS, **overrides}).frames


def reference(cls_name, model, prompt=PROMPT, **kwargs):
    import diffusers

    from sgld.model_builders.tiny import materialize_tiny

    pipe = getattr(diffusers, cls_name).from_pretrained(materialize_tiny(model))
    pipe.set_progress_bar_config(disable=True)
    s = SETTINGS
    return pipe(prompt=prompt, negative_prompt=s["negative_prompt"], num_frames=s["num_frames"],
                num_inference_steps=s["num_inference_steps"], generator=torch.Generator().manual_seed(s["seed"]),
                output_type="np", **kwargs).frames[0]


def max_diff(mine: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-pixel difference in 1/255 units (ours uint8, the reference float in [0, 1])."""
    return float(np.abs(mine.astype(np.float64) / 255 - ref).max())


def test_text_to_video_matches_diffusers(generators):
    mine = ours(generators, "tiny-hunyuan15", height=64, width=48)
    ref = reference("HunyuanVideo15Pipeline", "tiny-hunyuan15", height=64, width=48)
    assert mine.shape == (9, 64, 48, 3)
    assert max_diff(mine, ref) <= TOLERANCE, f"{max_diff(mine, ref) * 255:.2f}/255"


def test_image_to_video_matches_diffusers_and_takes_the_images_aspect(generators, input_png):
    from PIL import Image

    # No size given: both pick the tiny model's bucket nearest the 56x40 image (48 high, 64 wide).
    mine = ours(generators, "tiny-hunyuan15-i2v", image_path=str(input_png))
    ref = reference("HunyuanVideo15ImageToVideoPipeline", "tiny-hunyuan15-i2v", image=Image.open(input_png))
    assert mine.shape == ref.shape == (9, 48, 64, 3)
    assert max_diff(mine, ref) <= TOLERANCE, f"{max_diff(mine, ref) * 255:.2f}/255"


def test_prompt_encoding_matches_encode_prompt(generators):
    from diffusers import HunyuanVideo15Pipeline

    from sgld.model_builders.tiny import materialize_tiny
    from sgld.stages.hunyuan15_text import Hunyuan15TextEncodingStage

    pipe = HunyuanVideo15Pipeline.from_pretrained(materialize_tiny("tiny-hunyuan15"))
    texts = [PROMPT, "a cat", 'quotes “twice” and "twice" and "once"']
    hidden, mask, hidden_2, mask_2 = pipe.encode_prompt(texts, device="cpu", batch_size=len(texts))
    mine = generators("tiny-hunyuan15").pipeline.stage(Hunyuan15TextEncodingStage).encode(texts)
    for i, branch in enumerate(mine):  # each prompt's real tokens only: the reference's unpadded part
        real, real_2 = mask[i].bool(), mask_2[i].bool()
        assert branch["encoder_hidden_states"].shape == (1, int(real.sum()), 32)  # the 108 system tokens cropped
        torch.testing.assert_close(branch["encoder_hidden_states"][0], hidden[i][real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(branch["encoder_hidden_states_2"][0], hidden_2[i][real_2], rtol=1e-5, atol=1e-5)
        assert bool(branch["encoder_attention_mask"].bool().all() and branch["encoder_attention_mask_2"].bool().all())
    assert int(mask_2[1].sum()) == 0 and int(mask_2[0].sum()) > 0  # only quoted text reaches ByT5


@pytest.mark.parametrize("model", ["tiny-hunyuan15", "tiny-hunyuan15-i2v"])
def test_prompt_quoted_text_seed_guidance_and_image_each_change_the_video(generators, model, input_png, tmp_path):
    from PIL import Image

    image = {"image_path": str(input_png)} if model.endswith("i2v") else {}
    base = ours(generators, model, **image).astype(int)
    changed = {"prompt": ours(generators, model, "a blue bird flying over the sea", **image),
               "quoted text": ours(generators, model, PROMPT.replace("OPEN", "SHUT"), **image),
               "seed": ours(generators, model, seed=4, **image),
               "guidance": ours(generators, model, guidance_scale=1.0, **image)}
    if image:
        other = tmp_path / "other.png"
        Image.open(input_png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
        changed["image"] = ours(generators, model, image_path=str(other))
    for name, frames in changed.items():
        assert np.abs(base - frames.astype(int)).max() >= 20, name


def test_sizes_from_the_image_and_their_errors(generators, input_png):
    gen = generators("tiny-hunyuan15-i2v")
    assert gen.check(image_path=str(input_png), prompt="x").sampling.height == 48  # the run says the picked size
    assert ours(generators, "tiny-hunyuan15-i2v", image_path=str(input_png), height=32, width=32,
                num_inference_steps=1).shape == (9, 32, 32, 3)  # given sizes win (the image is cropped to them)
    with pytest.raises(UserError, match="give both --height and --width"):
        gen.check(image_path=str(input_png), prompt="x", height=32)
    with pytest.raises(UserError, match="image-to-video model"):
        gen.check(prompt="x")
    with pytest.raises(UserError, match="multiple of 16"):
        generators("tiny-hunyuan15").check(prompt="x", height=40, width=64)


def test_bucket_choice_equals_the_references():
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    from sgld.checks import bucket_nearest

    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=16)
    for side in (64, 640, 960):
        for height, width in [(9, 16), (16, 9), (1, 1), (1080, 1920), (3, 4), (40, 56), (1000, 90), (90, 1000)]:
            assert bucket_nearest(height, width, side, 16) == tuple(
                processor.calculate_default_height_width(height, width, side)), (side, height, width)
    assert bucket_nearest(9, 16, 640, 16) == (480, 848)  # the 480p T2V default


def test_loras_are_refused_with_the_reason(sgld_home):
    from sgld.run_config import run_config_from_options
    from sgld.runner import check_model_folder

    run = run_config_from_options({"model_path": "tiny-hunyuan15", "lora_path": "adapter.safetensors", "prompt": "x"})
    with pytest.raises(UserError, match="no LoRA loader for hunyuan15_t2v"):
        check_model_folder(run)


def test_runs_in_bf16(sgld_home):
    """The DiT embeds the timestep in its own dtype (the reference casts it): a bf16 run works end to end."""
    from sgld import DiffGenerator

    generator = DiffGenerator.from_pretrained("tiny-hunyuan15", precision="bf16", text_encoder_precisions=["bf16", "bf16"])
    frames = generator.generate("a red fox", num_inference_steps=2, num_frames=5, return_frames=True,
                                save_output=False).frames
    assert frames.shape == (5, 64, 64, 3) and frames.std() > 0


def test_single_requests_attend_mask_free_and_padded_batches_masked(generators):
    """Each branch's real tokens only: a lone request's forwards need no attention mask; requests of different
    prompt lengths sharing a batch are padded and masked (both paths equal the reference: see the parity tests)."""
    from sgld.api import BatchItem

    generator = generators("tiny-hunyuan15")
    transformer = generator.pipeline.components["transformer"]
    processor = transformer.transformer_blocks[0].attn.processor
    seen: list[bool] = []
    handle = transformer.register_forward_pre_hook(lambda *_: seen.append(processor.mask_free))
    try:
        ours(generators, "tiny-hunyuan15", num_inference_steps=2)
        assert seen == [True] * 4  # two steps, cond and uncond
        seen.clear()
        settings = dict(SETTINGS, num_inference_steps=2, save_output=False, return_frames=True)
        items = [BatchItem(dict(settings, prompt=p)) for p in ("a fox", 'a long prompt with "QUOTED" words in it')]
        outcomes = generator.generate_batch(items)
        assert all(not isinstance(outcome, Exception) and outcome.frames is not None for outcome in outcomes)
        # Per step: the prompts (of different lengths) padded and masked; the two negative prompts (equal) mask-free.
        assert seen == [False, True] * 2
    finally:
        handle.remove()
