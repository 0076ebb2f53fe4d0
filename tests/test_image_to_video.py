"""Wan image-to-video: our frames equal diffusers' WanImageToVideoPipeline, and the image matters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TOLERANCE = 2 / 255
PROMPT, NEGATIVE = "a red fox running through snow", "blurry"
SETTINGS = dict(seed=5, num_inference_steps=4, guidance_scale=5.0, height=64, width=64, num_frames=9)


def reference_frames(folder, image_path, guidance_2=None):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    pipe = WanImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    s = SETTINGS
    return pipe(
        image=Image.open(image_path).convert("RGB"), prompt=PROMPT, negative_prompt=NEGATIVE, height=s["height"],
        width=s["width"], num_frames=s["num_frames"], num_inference_steps=s["num_inference_steps"],
        guidance_scale=s["guidance_scale"], guidance_scale_2=guidance_2,
        generator=torch.Generator().manual_seed(s["seed"]), output_type="np",
    ).frames[0]


def our_frames(model, image_path, **overrides):
    from sgld import DiffGenerator

    settings = {**SETTINGS, **overrides}
    gen = DiffGenerator.from_pretrained(model)
    return gen.generate(PROMPT, negative_prompt=NEGATIVE, image_path=str(image_path), return_frames=True,
                        save_output=False, **settings).frames


@pytest.mark.parametrize("model,guidance_2", [("tiny-wan21-i2v", None), ("tiny-wan22-i2v", 3.0),
                                              ("tiny-wan22-ti2v", None)])
def test_frames_match_diffusers_image_to_video(model, guidance_2, input_png):
    from sgld.model_builders.tiny import materialize_tiny

    overrides = {"guidance_scale_2": guidance_2} if guidance_2 is not None else {}
    ours = our_frames(model, input_png, **overrides)
    ref = reference_frames(materialize_tiny(model), input_png, guidance_2)
    assert ours.shape == (9, 64, 64, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.float64) / 255 - ref).max()
    assert diff <= TOLERANCE, f"max per-pixel difference {diff * 255:.2f}/255"


def test_the_input_image_changes_the_video(input_png, tmp_path):
    from PIL import Image

    other = tmp_path / "flipped.png"
    Image.open(input_png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    first = our_frames("tiny-wan21-i2v", input_png).astype(np.float64)
    second = our_frames("tiny-wan21-i2v", other).astype(np.float64)
    assert np.abs(first - second).max() >= 20


def test_ti2v_with_an_image_differs_from_text_only(input_png):
    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained("tiny-wan22-ti2v")
    text_only = gen.generate(PROMPT, negative_prompt=NEGATIVE, return_frames=True, save_output=False, **SETTINGS).frames
    with_image = our_frames("tiny-wan22-ti2v", input_png)
    assert np.abs(text_only.astype(np.float64) - with_image).max() >= 20


def test_i2v_without_an_image_is_a_clear_error(tmp_path, capsys):
    from sgld.cli import main

    code = main(["generate", "--model-path", "tiny-wan21-i2v", "--prompt", "a fox", "--output-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "give --image-path" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.mp4"))


def test_unreadable_images_are_refused_before_weights_load(tmp_path):
    from sgld.errors import UserError
    from sgld.models.folder_model import FolderModel
    from sgld.request import Request
    from sgld.run_config import run_config_from_options

    sampling = run_config_from_options({"model_path": "tiny-wan21-i2v"}).sampling
    model = FolderModel.of("tiny-wan21-i2v")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for path, message in (("/nonexistent/first.png", "does not exist"), (str(broken), "not a readable")):
        with pytest.raises(UserError, match=message):
            model.check_request(Request.from_sampling(sampling, prompt="a fox", height=64, width=64, num_frames=9,
                                                      image_path=path))
    with pytest.raises(UserError, match="generates video from text only"):
        FolderModel.of("tiny-wan-t2v").check_request(Request.from_sampling(sampling, prompt="a fox", height=64,
                                                                           width=64, num_frames=9,
                                                                           image_path=str(broken)))
