"""The Qwen3-VL processor (MiniMax-H3's conditioner) built, saved and loaded without torchvision.

transformers gives ``Qwen3VLProcessor`` a video processor, and ``Qwen3VLVideoProcessor`` needs torchvision,
which has no CPU wheel here; ``from_pretrained`` then fails and diffusers' ``load_components`` leaves the
component unset. Prompts and image keyframes/references need only the tokenizer and the PIL image processor,
so the processor is built from those two (video references need torchvision and stay unsupported without it).
"""

from __future__ import annotations

import json
from pathlib import Path

# Qwen3-VL's released image/video preprocessing (patch 16, merge 2, temporal patch 2, mean/std 0.5, min and max
# pixels as shortest/longest edge), as in Qwen/Qwen3-VL-*'s preprocessor_config.json.
IMAGE_SETTINGS = dict(
    size={"shortest_edge": 65536, "longest_edge": 16777216}, patch_size=16, temporal_patch_size=2, merge_size=2,
    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
)
VIDEO_SIZE = {"shortest_edge": 4096, "longest_edge": 25165824}


def qwen3vl_processor(tokenizer, image_processor=None):
    """A ``Qwen3VLProcessor`` over ``tokenizer`` and a PIL image processor (Qwen3-VL's settings by default)."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from sgld.processors import _allow_missing_video_processor

    if image_processor is None:
        image_processor = Qwen2VLImageProcessorPil(**IMAGE_SETTINGS)
    with _allow_missing_video_processor():
        return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)


def save_qwen3vl_processor(processor, folder: Path) -> None:
    """Write the processor folder in the released layout: tokenizer files, image and video preprocessor configs."""
    folder.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text())
    # The released file names the torchvision-backed class; the PIL class reads the same settings.
    config.update(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen3VLProcessor")
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    video = {k: v for k, v in config.items() if k != "image_processor_type"}
    video.update(size=VIDEO_SIZE, video_processor_type="Qwen3VLVideoProcessor")
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")


def load_qwen3vl_processor(folder: Path):
    """Load a processor folder: transformers' own loader with torchvision, the PIL image path without it."""
    from transformers import AutoTokenizer, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return Qwen3VLProcessor.from_pretrained(folder)
    return qwen3vl_processor(AutoTokenizer.from_pretrained(folder), Qwen2VLImageProcessorPil.from_pretrained(folder))
