"""MiniMax-H3's condition images and prompt: the canvas (from the first keyframe's aspect, else 16:9; references
never bind it), the keyframes put on it (the first stretched, a follower cover-cropped with H3's own rounding) or
the reference images at their own size (their aspect at the folder's reference short edge), and the presentation
the Qwen3-VL conditioner reads (``"<Picture i>: "`` + a vision block per image, then the prompt), whose decoder
layer 50 output conditions the DiT. diffusers' ``MiniMaxH3ResizeStep``, ``MiniMaxH3Ref2VASetupStep`` (image
references), ``MiniMaxH3TextEncoderStep``, ``MiniMaxH3FL2VATextEncoderStep`` and ``MiniMaxH3Ref2VATextEncoderStep``
(whose presentations of images are the same); the conditioner call is diffusers' own ``get_qwen3vl_prompt_embeds``."""

from __future__ import annotations

from typing import Optional

import torch
from PIL import Image

from sgld.checks import open_input_image
from sgld.minimax_h3_rules import Geometry, Workflow, reference_size
from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage

TEXT_TAG, VIDEO_TAG = 1, 0  # MiniMax-H3's row tags: vision blocks in the text are video rows
TEXT_LAYER = 50  # the un-normed output of decoder layer 50 (``components.text_encoder_layer``)


def keyframe_paths(req: Request) -> list[tuple[str, str]]:
    """(anchor, path) of the request's keyframes in packed order: the first (``image_path``), the last."""
    first = req.image_path[0] if isinstance(req.image_path, list) else req.image_path
    return [(anchor, path) for anchor, path in (("first", first), ("last", req.last_image_path)) if path]


def cover_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """A follower keyframe onto the canvas: scaled to cover it (rounded), centred ``(src - w) // 2``, cropped."""
    scale = max(width / image.size[0], height / image.size[1])
    size = (max(width, round(image.size[0] * scale)), max(height, round(image.size[1] * scale)))
    left, top = max(0, (size[0] - width) // 2), max(0, (size[1] - height) // 2)
    return image.resize(size, Image.Resampling.LANCZOS).crop((left, top, left + width, top + height))


class MiniMaxH3ConditionImageStage(Stage):
    """Sets the request's canvas and workflow (``model_kwargs["workflow"]``) and prepares its condition images
    (``req.condition_image``, packed order): keyframes put on the canvas, or reference images at their own size."""

    name = "condition_images"

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def forward(self, req: Request) -> Request:
        if req.reference_images:
            return self.references(req)
        anchors = keyframe_paths(req)
        images = [open_input_image(path) for _, path in anchors]
        req.height, req.width = self.geometry.canvas(req.height, req.width, images[0].size if images else None)
        prepared = []
        for index, image in enumerate(images):
            if image.size == (req.width, req.height):
                prepared.append(image)
            elif index == 0:  # the geometry anchor is stretched (diffusers' image_processor.resize: PIL LANCZOS)
                prepared.append(image.resize((req.width, req.height), Image.Resampling.LANCZOS))
            else:
                prepared.append(cover_crop(image, req.width, req.height))
        req.condition_image = prepared or None
        req.model_kwargs = {**req.model_kwargs, "keyframe_anchors": tuple(anchor for anchor, _ in anchors),
                            "workflow": Workflow.fl2va if anchors else Workflow.t2va}
        return req

    def references(self, req: Request) -> Request:
        """ref2va: the canvas as asked, else 16:9; each reference resized (LANCZOS, as diffusers'
        ``image_processor.resize``) to its own aspect at the reference short edge."""
        req.height, req.width = self.geometry.canvas(req.height, req.width)
        prepared = []
        for path in req.reference_images:
            image = open_input_image(path, param="reference_images")
            size = reference_size(self.geometry, *image.size)
            prepared.append(image if image.size == size else image.resize(size, Image.Resampling.LANCZOS))
        req.condition_image = prepared
        req.model_kwargs = {**req.model_kwargs, "keyframe_anchors": (), "workflow": Workflow.ref2va}
        return req


class MiniMaxH3TextEncodingStage(Stage):
    """The presentation through the conditioner: ``cond_kwargs["encoder_hidden_states"]`` (1, tokens, dim) in
    the conditioner's dtype, and each text row's tag in ``model_kwargs["text_token_tags"]`` for the layout."""

    name = "encode_prompt"

    def __init__(self, tokenizer, processor, text_encoder: torch.nn.Module, placement: Placement):
        self.tokenizer = tokenizer
        self.processor = processor
        self.text_encoder = text_encoder
        self.placement = placement

    def presentation(self, prompt: str, keyframes: Optional[list[Image.Image]]) -> tuple[list[int], list[int], dict]:
        """(token ids, row tags, vision inputs): a label and a vision block per condition image (keyframe or
        reference), then the prompt."""
        tokenizer, processor = self.tokenizer, self.processor
        ids, tags, vision = [], [], {}
        if keyframes:
            features = processor.image_processor(images=keyframes, return_tensors="pt")
            grid = features["image_grid_thw"]
            vision = {"pixel_values": features["pixel_values"], "image_grid_thw": grid}
            merge = processor.image_processor.merge_size ** 2
            start, pad, end = (tokenizer.convert_tokens_to_ids(t) for t in
                               ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"))
            for index in range(len(keyframes)):
                label = tokenizer(f"<Picture {index + 1}>: ", add_special_tokens=False)["input_ids"]
                block = [start] + [pad] * (int(grid[index].prod()) // merge) + [end]
                ids += label + block
                tags += [TEXT_TAG] * len(label) + [VIDEO_TAG] * len(block)
        prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids + prompt, tags + [TEXT_TAG] * len(prompt), vision

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers.modular_pipelines.minimax_h3.encoders import get_qwen3vl_prompt_embeds

        ids, tags, vision = self.presentation(req.prompt, req.condition_image)
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            embeds = get_qwen3vl_prompt_embeds(encoder, self.processor, ids, vision, text_encoder_layer=TEXT_LAYER,
                                               device=device, dtype=encoder.dtype)
        req.cond_kwargs = {"encoder_hidden_states": embeds}  # in the conditioner's dtype, as the reference passes it
        req.model_kwargs = {**req.model_kwargs, "text_token_tags": torch.tensor(tags, dtype=torch.long)}
        return req
