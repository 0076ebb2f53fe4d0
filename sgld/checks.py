"""Request checks that need no weights (and no torch): sizes, lengths, input images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from sgld.errors import UserError
from sgld.request import Request


def _nearest_multiples(value: int, multiple: int) -> str:
    low = max(value // multiple * multiple, multiple)
    high = low + multiple if low <= value else low
    return f"{low} or {high}" if low != high else str(low)


def nearest_divisors(value: int, number: int) -> str:
    """The divisors of ``number`` nearest ``value`` from below and above: "2 or 4", or one of them."""
    divisors = [d for d in range(1, number + 1) if number % d == 0]
    low = max((d for d in divisors if d <= value), default=None)
    high = min((d for d in divisors if d >= value), default=None)
    return " or ".join(str(d) for d in dict.fromkeys(x for x in (low, high) if x is not None))


def check_ulysses_heads(ulysses_degree: int, heads: int) -> None:
    """Ulysses attention splits the heads over its ranks: the degree must divide the DiT's head count."""
    if ulysses_degree > 1 and heads % ulysses_degree:
        raise UserError(f"ulysses_degree={ulysses_degree} must divide the {heads} attention heads of this model's "
                        f"transformer; nearest valid: {nearest_divisors(ulysses_degree, heads)} (or use "
                        "--ring-degree, which splits the sequence without splitting heads)", param="ulysses_degree")


@dataclass(frozen=True)
class PositionLimit:
    """The largest output a DiT's precomputed rotary position table covers (None: that axis is unbounded).

    Past it the table is sliced short and the transformer fails mid-run with a shape error, so the
    request is refused up front. ``source`` names the config value that sets it (``rope_max_seq_len=1024``).
    """

    source: str
    max_height: Optional[int] = None
    max_width: Optional[int] = None
    max_frames: Optional[int] = None


def check_position_table(req: Request, limit: Optional[PositionLimit]) -> None:
    """Raise UserError naming the first of height, width, num_frames past ``limit``, with its largest valid value."""
    if limit is None:
        return
    for field, most in (("height", limit.max_height), ("width", limit.max_width), ("num_frames", limit.max_frames)):
        value = getattr(req, field)
        if most is not None and value is not None and value > most:
            raise UserError(f"{field}={value} is past this model's rotary position table ({limit.source}); "
                            f"largest valid {field}: {most}", param=field)


# Input images: formats we accept, and a pixel cap against decompression bombs.
INPUT_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_INPUT_PIXELS = 64 * 1024 * 1024


def open_input_image(path: str, param: str = "image_path") -> "PIL.Image.Image":  # noqa: F821
    """Open ``path`` as an RGB image, or raise UserError naming ``param`` and saying what is wrong with the file."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise UserError(f"{param} {path!r} does not exist or is not a file", param=param)
    try:
        with Image.open(path) as probe:
            fmt, (width, height) = probe.format, probe.size
            if fmt not in INPUT_IMAGE_FORMATS:
                raise UserError(f"{param} {path!r} is a {fmt} image; use PNG, JPEG or WebP", param=param)
            if width * height > MAX_INPUT_PIXELS:
                raise UserError(f"{param} {path!r} is {width}x{height}; the limit is {MAX_INPUT_PIXELS} pixels",
                                param=param)
            probe.load()
            return probe.convert("RGB")
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{param} {path!r} is not a readable PNG, JPEG or WebP image ({exc})",
                        param=param) from None


def bucket_nearest(height: int, width: int, side: int, multiple: int) -> tuple[int, int]:
    """(height, width) of the training bucket nearest the aspect ratio ``height / width``, as HunyuanVideo-1.5 picks it.

    The buckets are the sizes, in multiples of ``multiple``, of at most (side / multiple)² patches with
    sides at most 4:1; a landscape image takes the nearest bucket at least as wide, a portrait one the
    nearest at least as tall (diffusers' ``generate_crop_size_list`` and ``get_closest_ratio``).
    """
    patches = round((side / multiple) ** 2)
    buckets = []
    high, wide = patches, 1
    while high > 0:
        if max(high, wide) / min(high, wide) <= 4.0:
            buckets.append((high * multiple, wide * multiple))
        if (wide + 1) * high <= patches:
            wide += 1
        else:
            high -= 1
    aspect = height / width
    offsets = [round(h / w, 5) - aspect for h, w in buckets]
    pool = [i for i, off in enumerate(offsets) if (off <= 0 if aspect >= 1 else off >= 0)]
    return buckets[min(pool, key=lambda i: abs(offsets[i]))]


def _check_common(req: Request, spatial_multiple: int, size_optional: bool = False) -> None:
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise UserError("prompt must be a non-empty string (--prompt)", param="prompt")
    if req.num_inference_steps < 1:
        raise UserError(f"num_inference_steps must be >= 1, got {req.num_inference_steps}", param="num_inference_steps")
    if req.guidance_scale < 0:
        raise UserError(f"guidance_scale must be >= 0, got {req.guidance_scale}", param="guidance_scale")
    for field in ("height", "width"):
        value = getattr(req, field)
        if value is None:
            if size_optional:
                continue
            raise UserError(f"{field} is not set; this model needs --height and --width", param=field)
        if value < spatial_multiple or value % spatial_multiple:
            raise UserError(
                f"{field}={value} must be a multiple of {spatial_multiple} for this model; "
                f"nearest valid: {_nearest_multiples(value, spatial_multiple)}",
                param=field,
            )
    if (req.height is None) != (req.width is None):
        raise UserError("give both --height and --width, or neither", param="height" if req.height is None else "width")


class ImageMode(StrEnum):
    """Whether a model takes an input image (``image_path``)."""

    never = "never"  # text only
    optional = "optional"  # text, or text and a first frame (Wan2.2 TI2V)
    required = "required"  # edit and image-to-video models


def check_video_request(req: Request, spatial_multiple: int, temporal_factor: int, image: ImageMode = ImageMode.never,
                        size_optional: bool = False) -> None:
    """Raise UserError naming the field when the model cannot produce this size or length.

    ``image``: whether the model takes a first frame (``image_path``): never (text-to-video),
    optional (Wan2.2 TI2V) or required (image-to-video); a given image is opened and checked here.
    ``size_optional``: height and width may both be unset (the model sizes the video from the image).
    """
    _check_common(req, spatial_multiple, size_optional=size_optional)
    if req.image_path and image == ImageMode.never:
        raise UserError("image_path: this model generates video from text only", param="image_path")
    if not req.image_path and image == ImageMode.required:
        raise UserError("this is an image-to-video model: give --image-path (the first frame)", param="image_path")
    check_input_images(req, 1)
    n = req.num_frames
    if n < 1 or (n - 1) % temporal_factor:
        low = max((n - 1) // temporal_factor * temporal_factor + 1, 1)
        high = low + temporal_factor
        raise UserError(
            f"num_frames={n} must be {temporal_factor}k+1 for this model; nearest valid: {low} or {high}",
            param="num_frames",
        )


def input_images_taken(most: int) -> str:
    """How many input images a model takes, in words: "one input image", "up to 3 input images"."""
    return "one input image" if most == 1 else f"up to {most} input images"


def check_input_images(req: Request, most: int) -> None:
    """At most ``most`` input images, each a readable PNG, JPEG or WebP of a sane size."""
    paths = req.image_paths
    if len(paths) > most:
        raise UserError(f"image_path: {len(paths)} images given; this model takes {input_images_taken(most)}",
                        param="image_path")
    for path in paths:
        open_input_image(path)


def check_image_request(req: Request, spatial_multiple: int, image: ImageMode = ImageMode.never, max_images: int = 1) -> None:
    """Like check_video_request for image models: one frame, no flow-shift override, input images as the model takes them.

    ``image``: never (text to image), optional (reference images: FLUX.2) or required (edit models,
    which may leave height/width unset: the output then takes the input image's aspect ratio).
    The input images are opened and checked here.
    """
    needs_image = image == ImageMode.required
    _check_common(req, spatial_multiple, size_optional=needs_image)
    if req.num_frames != 1:
        raise UserError(
            f"num_frames={req.num_frames}: this model makes images; --num-frames is for video models", param="num_frames"
        )
    if req.flow_shift is not None:
        raise UserError("flow_shift: this model's shift follows the image size; leave it unset", param="flow_shift")
    if needs_image and not req.image_path:
        raise UserError("this model edits an input image: give --image-path", param="image_path")
    if image == ImageMode.never and req.image_path:
        raise UserError("image_path: this model generates from text only", param="image_path")
    check_input_images(req, max_images)
