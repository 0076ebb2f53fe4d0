"""Z-Image prompt encoding with a Qwen3 text encoder, as ``ZImagePipeline.encode_prompt``."""

from __future__ import annotations

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.sample_batch import pad_to_one_length
from sgld.stages.text_encoding import chat_prompts, encode_branches


class ZImageTextEncodingStage(Stage):
    """Sets each branch's ``encoder_hidden_states`` (the prompt's real tokens only) and its mask.

    Each prompt goes through the tokenizer's chat template (one user turn, generation prompt,
    thinking on), padded to ``max_length``; the second-to-last hidden state is kept at the real
    tokens. Prompt and negative prompt differ in length, so the two branches are zero-padded to
    one length with a mask (the DiT adapter hands the DiT the real tokens only). The negative
    branch exists when the family guides the request (Z-Image: scale > 0).
    """

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, placement: Placement, out_dtype: torch.dtype, guided, max_length: int = 512):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.placement = placement
        self.out_dtype = out_dtype
        self.guided = guided  # (Request) -> bool: FamilySpec.guided
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        """One (1, L_i, D) embedding per text, its real tokens only, from one text-encoder call."""
        inputs = self.tokenizer(chat_prompts(self.tokenizer, texts, thinking=True), padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            mask = inputs.attention_mask.to(device).bool()
            hidden = encoder(input_ids=inputs.input_ids.to(device), attention_mask=mask,
                             output_hidden_states=True).hidden_states[-2]
        return [hidden[i][mask[i]].unsqueeze(0).to(device=self.placement.device, dtype=self.out_dtype)
                for i in range(len(texts))]

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        for req, (cond, uncond) in zip(reqs, encode_branches(reqs, self.guided, self.encode)):
            req.cond_kwargs = {"encoder_hidden_states": cond, "encoder_hidden_states_mask": None}
            req.uncond_kwargs = None
            if uncond is not None:
                req.cond_kwargs, req.uncond_kwargs = pad_to_one_length(
                    req.cond_kwargs, {"encoder_hidden_states": uncond, "encoder_hidden_states_mask": None})
        return reqs
