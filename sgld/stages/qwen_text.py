"""Qwen-Image prompt encoding with the Qwen2.5-VL language model, as the reference pipelines do.

The prompt is wrapped in a chat template, the last hidden layer is taken, and the
template's leading tokens (the system prompt: 34 tokens for Qwen-Image, 64 for Edit)
are dropped. Edit passes the condition image through the VL processor into the same
encoding. Prompt and negative prompt are encoded separately: their lengths differ, and
the reference runs the two guidance branches unpadded. ``pad_branches`` pads the shorter
one (with a mask that hides the padding from attention) so both run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.sample_batch import pad_to_one_length
from sgld.stages.text_encoding import encode_branches



@dataclass(frozen=True)
class PromptTemplate:
    """A chat template, how many of its leading tokens to drop, and the cap on what is kept.

    ``max_tokens`` caps the kept sequence (Qwen-Image: 1024); None keeps everything (Edit,
    whose sequence holds the image's vision tokens too: the reference does not cut it).
    """

    text: str
    drop_tokens: int
    max_tokens: Optional[int] = None
    # Put before the prompt once per input image, numbered from 1 (Qwen-Image-Edit-Plus).
    image_prefix: Optional[str] = None


QWEN_IMAGE_TEMPLATE = PromptTemplate(
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
    drop_tokens=34,
    max_tokens=1024,
)
QWEN_IMAGE_EDIT_TEMPLATE = PromptTemplate(
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where appropriate."
    "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n",
    drop_tokens=64,
)


QWEN_IMAGE_EDIT_PLUS_TEMPLATE = PromptTemplate(
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where appropriate."
    "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
    drop_tokens=64,
    image_prefix="Picture {}: <|vision_start|><|image_pad|><|vision_end|>",
)


class QwenTextEncodingStage(Stage):
    """Sets ``encoder_hidden_states`` (and its mask) per guidance branch.

    ``tokenizer`` is the Qwen2 tokenizer (text-to-image) or the Qwen2-VL processor (edit,
    ``with_image=True``: the request's ``condition_image`` goes in with the text).
    """

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, placement: Placement, out_dtype: torch.dtype,
                 template: PromptTemplate, with_image: bool = False, pad_branches: bool = False):
        self.tokenizer = tokenizer
        self.pad_branches = pad_branches
        self.text_encoder = text_encoder
        self.placement = placement
        self.out_dtype = out_dtype
        self.template = template
        self.with_image = with_image

    def _inputs(self, text: str, image) -> dict:
        if self.template.image_prefix is not None:  # the images (a list), numbered, then the prompt
            text = "".join(self.template.image_prefix.format(i + 1) for i in range(len(image))) + text
        formatted = [self.template.text.format(text)]
        if self.with_image:
            return dict(self.tokenizer(text=formatted, images=image, padding=True, return_tensors="pt"))
        template = self.template
        return dict(self.tokenizer(formatted, max_length=template.max_tokens + template.drop_tokens,
                                   padding=True, truncation=True, return_tensors="pt"))

    @torch.no_grad()
    def encode(self, text: str, image=None) -> dict:
        """DiT text inputs for one prompt: ``encoder_hidden_states`` (1, L, D) and its mask (None: all valid)."""
        inputs = self._inputs(text, image)
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            inputs = {k: v.to(device) for k, v in inputs.items() if k in
                      ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
            hidden = encoder(**inputs, output_hidden_states=True).hidden_states[-1]
        # One prompt, no padding: every position is real, so the mask is all ones and dropped.
        hidden = hidden[:, self.template.drop_tokens:][:, : self.template.max_tokens]
        return {"encoder_hidden_states": hidden.to(device=self.placement.device, dtype=self.out_dtype),
                "encoder_hidden_states_mask": None}

    @torch.no_grad()
    def encode_many(self, texts: list[str]) -> list[dict]:
        """``encode`` for several prompts in one text-encoder call (text-to-image only).

        The batch is padded on the right with an attention mask, as the reference pads a batch of
        prompts; each prompt keeps its real tokens only, so its embedding is the one it gets alone.
        """
        template = self.template
        inputs = self.tokenizer([template.text.format(t) for t in texts], max_length=template.max_tokens + template.drop_tokens,
                                padding=True, truncation=True, padding_side="right", return_tensors="pt")
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            mask = inputs.attention_mask.to(device)
            hidden = encoder(input_ids=inputs.input_ids.to(device), attention_mask=mask,
                             output_hidden_states=True).hidden_states[-1]
        lengths = mask.sum(dim=1).tolist()
        return [{"encoder_hidden_states": hidden[i : i + 1, template.drop_tokens : length][:, : template.max_tokens]
                 .to(device=self.placement.device, dtype=self.out_dtype), "encoder_hidden_states_mask": None}
                for i, length in enumerate(lengths)]

    def forward(self, req: Request) -> Request:
        image = req.condition_image if self.with_image else None
        cond = self.encode(req.prompt, image)
        uncond = self.encode(req.negative_prompt, image) if req.do_cfg else None
        return self._set_branches(req, cond, uncond)

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        if self.with_image:  # each prompt goes in with its own image: one call each
            return [self.forward(req) for req in reqs]
        branches = encode_branches(reqs, lambda req: req.do_cfg, self.encode_many)
        return [self._set_branches(req, cond, uncond) for req, (cond, uncond) in zip(reqs, branches)]

    def _set_branches(self, req: Request, cond: dict, uncond: Optional[dict]) -> Request:
        req.cond_kwargs, req.uncond_kwargs = cond, uncond
        if uncond is not None and self.pad_branches:
            req.cond_kwargs, req.uncond_kwargs = pad_to_one_length(cond, uncond)
        return req
