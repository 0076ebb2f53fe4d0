"""Prompt encoding with a T5/UMT5 encoder, as Wan uses it."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage


@torch.no_grad()
def clip_pooled(tokenizer, text_encoder, placement: Placement, name: str, texts: list[str], max_length: int) -> torch.Tensor:
    """CLIP's pooled output (len(texts), P), each text padded to ``max_length``, as FLUX and HunyuanVideo take it."""
    ids = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    with placement.active(name, text_encoder) as encoder:
        return encoder(ids.to(next(encoder.parameters()).device), output_hidden_states=False).pooler_output


def encode_branches(reqs: list[Request], guided: Callable[[Request], bool],
                    encode: Callable[[list[str]], Sequence[Any]]) -> list[tuple[Any, Any]]:
    """(cond, uncond or None) per request, from one ``encode`` call over every prompt and then the negative
    prompts of the requests ``guided`` says run an unconditional branch; ``encode`` gives one item per text."""
    negatives = [req for req in reqs if guided(req)]
    encoded = encode([req.prompt for req in reqs] + [req.negative_prompt for req in negatives])
    uncond = dict(zip(map(id, negatives), encoded[len(reqs):]))
    return [(encoded[i], uncond.get(id(req))) for i, req in enumerate(reqs)]


def chat_prompts(tokenizer, texts: list[str], thinking: bool) -> list[str]:
    """Each text as one user turn of the tokenizer's chat template, with the generation prompt (Qwen3's ``enable_thinking``)."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True, enable_thinking=thinking) for text in texts]


class T5TextEncodingStage(Stage):
    """Encodes prompt and negative prompt in one batch; zeroes embeddings past each prompt.

    Matches diffusers' ``WanPipeline.encode_prompt``: cleaned text, padded to
    ``max_length`` tokens, hidden states beyond the real length set to zero.
    """

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, placement: Placement, out_dtype: torch.dtype, max_length: int = 512):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.placement = placement
        self.out_dtype = out_dtype
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), max_length, dim) embeddings on the run's device."""
        inputs = self.tokenizer(
            [prompt_clean(t) for t in texts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
            hidden = encoder(ids, mask).last_hidden_state
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return hidden.to(device=self.placement.device, dtype=self.out_dtype)

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        # Every prompt and negative prompt of the batch in one encoder call (all padded to max_length).
        branches = encode_branches(reqs, lambda req: req.do_cfg, lambda texts: self.encode(texts).split(1))
        for req, (cond, uncond) in zip(reqs, branches):
            req.cond_kwargs = {"encoder_hidden_states": cond}
            req.uncond_kwargs = None if uncond is None else {"encoder_hidden_states": uncond}
        return reqs
