"""Qwen2-VL processor loading that works without torchvision.

transformers 5 gives ``Qwen2VLProcessor`` a video processor, which needs torchvision, and
checks every sub-processor's class on construction. Image-only use (Qwen-Image-Edit)
needs neither: without torchvision we build the processor from its PIL image processor
and tokenizer, skipping only the class check of the absent video processor.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def _allow_missing_video_processor() -> Iterator[None]:
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class

    def check(self, argument_name, argument):
        if argument is None and "video" in argument_name:
            return None
        return original(self, argument_name, argument)

    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = original


def qwen2vl_processor(image_processor, tokenizer):
    """A ``Qwen2VLProcessor`` over ``image_processor`` and ``tokenizer`` with no video processor."""
    from transformers import Qwen2VLProcessor

    with _allow_missing_video_processor():
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)


def load_qwen2vl_processor(folder: Path):
    """Load a saved Qwen2-VL processor folder; falls back to the PIL image path without torchvision."""
    from transformers import AutoTokenizer, Qwen2VLProcessor
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return Qwen2VLProcessor.from_pretrained(folder)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return qwen2vl_processor(Qwen2VLImageProcessorPil.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
