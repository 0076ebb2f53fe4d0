"""Image models through both front doors: files written in the asked format, clean errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli


def read_image(path):
    with Image.open(path) as image:
        return image.format, image.size, np.asarray(image.convert("RGB"))


def test_qwen_image_generate_command(tmp_path):
    proc = run_cli(
        "sgld.cli", "generate", "--model-path", "tiny-qwen-image", "--prompt", "a red fox in the snow",
        "--width", "64", "--height", "48", "--save-output", "--output-path", str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    fmt, size, pixels = read_image(tmp_path / "a_red_fox_in_the_snow_seed1024.png")
    assert fmt == "PNG" and size == (64, 48) and pixels.std() > 5  # a real image, not a flat fill
    assert "a_red_fox_in_the_snow_seed1024.png" in proc.stdout


def test_qwen_image_edit_generate_command(tmp_path, input_png):
    proc = run_cli(
        "sgld.cli", "generate", "--model-path", "tiny-qwen-image-edit", "--prompt", "make it blue",
        "--image-path", str(input_png), "--width", "64", "--height", "64", "--num-inference-steps", "2",
        "--save-output", "--output-path", str(tmp_path), "--output-file-name", "edited.jpg",
    )
    assert proc.returncode == 0, proc.stderr
    fmt, size, _ = read_image(tmp_path / "edited.jpg")
    assert fmt == "JPEG" and size == (64, 64)


def test_edit_plus_takes_several_images_from_flags_and_from_a_config_file(tmp_path, input_png):
    """--image-path given twice makes an image from both; a --config file's list composes the same run. (That each
    image changes the output is test_image_parity's; one 1 MP-conditioned CLI run costs about 8 s here.)"""
    import yaml

    from sgld.cli import build_parser, collect_options, parse
    from sgld.run_config import run_config_from_options

    second = tmp_path / "second.png"
    Image.open(input_png).rotate(90, expand=True).save(second)
    common = ["--width", "32", "--height", "32", "--num-inference-steps", "2", "--save-output", "--output-path",
              str(tmp_path), "--output-file-name", "plus.png"]
    flags = ["--model-path", "tiny-qwen-image-edit-plus", "--image-path", str(input_png), "--image-path", str(second)]
    proc = run_cli("sgld.cli", "generate", "--prompt", "put them together", *flags, *common)
    assert proc.returncode == 0, proc.stderr
    _, size, pixels = read_image(tmp_path / "plus.png")
    assert size == (32, 32) and pixels.std() > 5
    config = tmp_path / "plus.yaml"
    config.write_text(yaml.safe_dump({"model_path": "tiny-qwen-image-edit-plus",
                                      "image_path": [str(input_png), str(second)]}))
    parser = build_parser()
    from_flags, from_file = (run_config_from_options(collect_options(parse(parser, ["generate", *argv, *common])))
                             for argv in (flags, ["--config", str(config)]))
    assert from_file.sampling.image_path == [str(input_png), str(second)]
    assert from_file == from_flags


def test_flux_through_hydra(tmp_path):
    proc = run_cli("sgld.generate", "model=tiny_flux", "sampling.prompt=a cat", f"output.path={tmp_path}",
                   "output.file_name=cat.webp")
    assert proc.returncode == 0, proc.stderr
    fmt, size, _ = read_image(tmp_path / "cat.webp")
    assert fmt == "WEBP" and size == (64, 64)


def test_python_api_frames_shape(sgld_home, tmp_path):
    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained("tiny-flux")
    res = gen.generate("a cat", height=32, width=48, return_frames=True, output_path=str(tmp_path))
    assert res.frames.shape == (1, 32, 48, 3) and res.frames.dtype == np.uint8
    fmt, size, pixels = read_image(res.path)
    assert fmt == "PNG" and size == (48, 32)
    assert np.array_equal(pixels, res.frames[0])  # PNG is lossless: the file holds exactly the frame


@pytest.mark.parametrize(
    "model,args,message",
    [
        ("tiny-qwen-image", ["--num-frames", "9"], "num_frames=9: this model makes images; --num-frames is for video models"),
        ("tiny-flux", ["--height", "60"], "height=60 must be a multiple of 16"),
        ("tiny-flux", ["--output-file-name", "x.mp4"], ".mp4"),
        ("tiny-qwen-image-edit", [], "this model edits an input image: give --image-path"),
        ("tiny-qwen-image-edit", ["--image-path", "/no/such.png"], "image_path '/no/such.png' does not exist"),
        ("tiny-qwen-image-edit", ["--image-path", "NOT_AN_IMAGE"], "is not a readable PNG, JPEG or WebP image"),
        ("tiny-qwen-image-edit", ["--image-path", "INPUT", "--height", "64"], "give both --height and --width"),
        ("tiny-qwen-image", ["--image-path", "INPUT"], "this model generates from text only"),
        ("tiny-qwen-image-edit", ["--image-path", "INPUT", "--image-path", "INPUT"],
         "2 images given; this model takes one input image"),
        ("tiny-qwen-image-edit-plus", ["--image-path", "INPUT"] * 4, "4 images given; this model takes up to 3 input images"),
        ("tiny-qwen-image-edit-plus", ["--image-path", "INPUT", "--image-path", "NOT_AN_IMAGE"],
         "is not a readable PNG, JPEG or WebP image"),
        ("tiny-wan21-i2v", ["--image-path", "INPUT", "--image-path", "INPUT"], "2 images given; this model takes one"),
    ],
)
def test_bad_image_requests_exit_2(model, args, message, tmp_path, input_png):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    args = [str(junk) if a == "NOT_AN_IMAGE" else str(input_png) if a == "INPUT" else a for a in args]
    proc = run_cli("sgld.cli", "generate", "--model-path", model, "--prompt", "x", "--output-path", str(tmp_path),
                   *args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.png"))[1:]  # nothing written but the junk input
