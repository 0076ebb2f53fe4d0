"""FLUX prompt encoding: CLIP pooled output + T5 hidden states, as ``FluxPipeline.encode_prompt``."""

from __future__ import annotations

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.text_encoding import clip_pooled


class FluxTextEncodingStage(Stage):
    """Sets ``encoder_hidden_states`` / ``pooled_projections`` and the shared ``txt_ids``."""

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, tokenizer_2, text_encoder_2, placement: Placement,
                 out_dtype: torch.dtype, max_sequence_length: int = 512):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.placement = placement
        self.out_dtype = out_dtype
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 hidden states (N, L, D), CLIP pooled outputs (N, P)) on the run's device, one call per encoder."""
        pooled = clip_pooled(self.tokenizer, self.text_encoder, self.placement, "text_encoder", texts,
                             self.tokenizer.model_max_length)
        t5_ids = self.tokenizer_2(texts, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
        with self.placement.active("text_encoder_2", self.text_encoder_2) as encoder:
            hidden = encoder(t5_ids.to(next(encoder.parameters()).device), output_hidden_states=False)[0]
        device = self.placement.device
        return hidden.to(device=device, dtype=self.out_dtype), pooled.to(device=device, dtype=self.out_dtype)

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        hidden, pooled = self.encode([req.prompt for req in reqs])
        for i, req in enumerate(reqs):
            req.cond_kwargs = {"encoder_hidden_states": hidden[i : i + 1], "pooled_projections": pooled[i : i + 1]}
            req.uncond_kwargs = None  # guidance-distilled: guidance is a model input, not a second branch
            req.model_kwargs["txt_ids"] = torch.zeros(hidden.shape[1], 3, device=hidden.device, dtype=self.text_encoder.dtype)
        return reqs
