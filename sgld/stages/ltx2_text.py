"""LTX-2's text conditioning: every Gemma 3 hidden state of the prompt, through the text connectors, per stream."""

from __future__ import annotations

from typing import Callable

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.text_encoding import encode_branches

# The reference pads every prompt to this many tokens; the connectors turn the padding into learned registers.
MAX_SEQUENCE_LENGTH = 1024


class Ltx2TextEncodingStage(Stage):
    """Prompts (and the negative prompts of guided requests) in one Gemma call and one connectors call.

    As ``LTX2Pipeline._get_gemma_prompt_embeds``: stripped text, ``<bos>`` first, left padding to 1024 tokens,
    no chat template; all ``num_hidden_layers + 1`` hidden states stacked on the feature axis. The connectors
    give the video and audio streams their text tokens. With learnable registers (LTX-2.0 and 2.3 have them)
    the padding becomes registers and the returned mask is all ones: the DiT then gets no mask at all, which is
    the same attention (its bias would be zeros) on the unmasked kernels.
    """

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, connectors, placement: Placement, out_dtype: torch.dtype,
                 guided: Callable[[Request], bool]):
        self.guided = guided  # whether a request runs the negative prompt's branch
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.connectors = connectors
        self.placement = placement
        self.out_dtype = out_dtype
        tokenizer.padding_side = "left"  # Gemma's side, which the connectors' register placement assumes
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(video text, audio text, mask) on the run's device: (len(texts), 1024, dim) each, the mask (len, 1024)."""
        inputs = self.tokenizer([text.strip() for text in texts], padding="max_length",
                                max_length=MAX_SEQUENCE_LENGTH, truncation=True, add_special_tokens=True,
                                return_tensors="pt")
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
            hidden = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            hidden = torch.stack(hidden, dim=-1).flatten(2, 3).to(encoder.dtype)
        with self.placement.active("connectors", self.connectors) as connectors:
            device = next(connectors.parameters()).device
            video, audio, mask = connectors(hidden.to(device=device, dtype=connectors.dtype), mask.to(device),
                                            padding_side=self.tokenizer.padding_side)
        to = dict(device=self.placement.device, dtype=self.out_dtype)
        return video.to(**to), audio.to(**to), mask.to(self.placement.device)

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        def encode(texts: list[str]) -> list[dict]:
            video, audio, mask = self.encode(texts)
            masked = not bool(mask.all())  # registers fill the padding: all ones, so no mask
            return [{"encoder_hidden_states": video[i : i + 1], "audio_encoder_hidden_states": audio[i : i + 1],
                     "encoder_attention_mask": mask[i : i + 1] if masked else None,
                     "audio_encoder_attention_mask": mask[i : i + 1] if masked else None} for i in range(len(texts))]

        for req, (cond, uncond) in zip(reqs, encode_branches(reqs, self.guided, encode)):
            req.cond_kwargs, req.uncond_kwargs = cond, uncond
        return reqs
