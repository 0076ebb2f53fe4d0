"""Pipeline families; the registry picks one from the folder's model_index.json."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the base pulls in torch; the registry must stay light
    from sgld.pipelines.base import Pipeline

# family -> "module:class"
PIPELINES = {
    "wan": "sgld.pipelines.wan:WanT2VPipeline",
    "wan_ti2v": "sgld.pipelines.wan:WanTI2VPipeline",
    "wan_i2v": "sgld.pipelines.wan:WanI2VPipeline",
    "flux": "sgld.pipelines.flux:FluxT2IPipeline",
    "hunyuan": "sgld.pipelines.hunyuan:HunyuanT2VPipeline",
    "qwen_image": "sgld.pipelines.qwen_image:QwenImageT2IPipeline",
    "qwen_image_edit": "sgld.pipelines.qwen_image:QwenImageEditTI2IPipeline",
}


def pipeline_class(family: str) -> "type[Pipeline]":
    """The Pipeline subclass for ``family``."""
    module, _, name = PIPELINES[family].partition(":")
    return getattr(importlib.import_module(module), name)
