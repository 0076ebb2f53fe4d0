"""HunyuanVideo prompt encoding: Llama hidden states through the reference's template, plus CLIP's pooled output."""

from __future__ import annotations

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.text_encoding import clip_pooled


def prompt_template() -> tuple[str, int]:
    """(template, leading tokens to drop) as diffusers' HunyuanVideoPipeline defines them."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE["template"], DEFAULT_PROMPT_TEMPLATE["crop_start"]


class HunyuanTextEncodingStage(Stage):
    """Sets ``encoder_hidden_states``, ``encoder_attention_mask`` and ``pooled_projections``.

    As ``HunyuanVideoPipeline.encode_prompt``: the prompt goes into the system template,
    padded to 256 prompt tokens after the template's ``crop_start``; the Llama hidden state
    ``skip_layers`` before the last is kept from ``crop_start`` on, with its mask; CLIP
    (77 tokens) gives the pooled vector. Guidance is embedded (a model input), so there is
    one branch.
    """

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, tokenizer_2, text_encoder_2, placement: Placement,
                 out_dtype: torch.dtype, max_sequence_length: int = 256, skip_layers: int = 2):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.placement = placement
        self.out_dtype = out_dtype
        self.max_sequence_length = max_sequence_length
        self.skip_layers = skip_layers
        self.template, self.crop_start = prompt_template()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Llama hidden states (N, L, D), their mask (N, L), CLIP pooled (N, P)) on the run's device."""
        inputs = self.tokenizer([self.template.format(t) for t in texts], max_length=self.max_sequence_length + self.crop_start,
                                padding="max_length", truncation=True, return_tensors="pt", return_attention_mask=True)
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            mask = inputs.attention_mask.to(device)
            hidden = encoder(input_ids=inputs.input_ids.to(device), attention_mask=mask,
                             output_hidden_states=True).hidden_states[-(self.skip_layers + 1)]
        hidden, mask = hidden[:, self.crop_start:], mask[:, self.crop_start:]
        pooled = clip_pooled(self.tokenizer_2, self.text_encoder_2, self.placement, "text_encoder_2", texts, 77)
        device = self.placement.device
        return (hidden.to(device=device, dtype=self.out_dtype), mask.to(device=device, dtype=self.out_dtype),
                pooled.to(device=device, dtype=self.out_dtype))

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        hidden, mask, pooled = self.encode([req.prompt for req in reqs])
        for i, req in enumerate(reqs):
            req.cond_kwargs = {"encoder_hidden_states": hidden[i : i + 1], "encoder_attention_mask": mask[i : i + 1],
                               "pooled_projections": pooled[i : i + 1]}
            req.uncond_kwargs = None  # guidance-distilled: guidance is a model input, not a second branch
        return reqs
