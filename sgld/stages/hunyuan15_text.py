"""HunyuanVideo-1.5 prompt encoding, as ``HunyuanVideo15Pipeline.encode_prompt``.

Two encoders per prompt. The Qwen2.5-VL language model reads the prompt as the user turn after
a fixed system message, padded to 1000 prompt tokens; its third-to-last hidden state is kept
after the template's 108 system tokens. ByT5 reads only the text the prompt quotes ("..."),
which the model draws as glyphs; a prompt without quotes has none.

The reference hands the DiT both at their padded lengths (1000 and 256) with masks; the DiT
masks the padding out of every attention, so it changes nothing but costs a dense mask that
keeps attention off its fast kernels. sgld keeps each prompt's real tokens only (all-true
masks): attention then runs mask-free (``sgld.levers.hunyuan15_attention``). Requests that share
a batch are padded to one length again (``sample_batch``), with masks.
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.text_encoding import encode_branches

SYSTEM_MESSAGE = (
    "You are a helpful assistant. Describe the video by detailing the following aspects:         "
    "1. The main content and theme of the video.         "
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.         "
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.         "
    "4. background environment, light, style and atmosphere.         "
    "5. camera angles, movements, and transitions used in the video."
)
TEMPLATE_TOKENS = 108  # the system part of the template, cropped from the hidden states
PROMPT_TOKENS = 1000  # the Qwen prompt tokens kept (padded to this)
GLYPH_TOKENS = 256  # the ByT5 tokens (padded to this)
SKIP_LAST_LAYERS = 2  # the hidden state two layers before the last


def glyph_text(prompt: str) -> Optional[str]:
    """The text a prompt quotes, as ByT5 reads it ('Text "A". Text "B". '), or None without quotes."""
    quoted = [a or b for a, b in re.findall(r"\"(.*?)\"|“(.*?)”", prompt)]
    if len(quoted) > 1:
        quoted = list(dict.fromkeys(quoted))
    return ". ".join(f'Text "{text}"' for text in quoted) + ". " if quoted else None


class Hunyuan15TextEncodingStage(Stage):
    """Sets each branch's Qwen (``encoder_hidden_states``) and ByT5 (``encoder_hidden_states_2``) inputs and masks."""

    name = "encode_prompt"

    def __init__(self, tokenizer, text_encoder, tokenizer_2, text_encoder_2, placement: Placement,
                 out_dtype: torch.dtype):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.placement = placement
        self.out_dtype = out_dtype

    @torch.no_grad()
    def encode_qwen(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(texts), 1000, D) hidden states after the system tokens, and their mask, from one encoder call."""
        chats = [[{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": text or " "}]
                 for text in texts]
        inputs = self.tokenizer.apply_chat_template(
            chats, add_generation_prompt=True, tokenize=True, return_dict=True, padding="max_length",
            max_length=PROMPT_TOKENS + TEMPLATE_TOKENS, truncation=True, return_tensors="pt")
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            mask = inputs["attention_mask"].to(device)
            hidden = encoder(input_ids=inputs["input_ids"].to(device), attention_mask=mask,
                             output_hidden_states=True).hidden_states[-(SKIP_LAST_LAYERS + 1)]
        return hidden[:, TEMPLATE_TOKENS:], mask[:, TEMPLATE_TOKENS:]

    @torch.no_grad()
    def encode_glyphs(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(texts), 256, D2) ByT5 states of each text's quoted words (zeros without quotes), and masks."""
        glyphs = [glyph_text(text) for text in texts]
        dim = self.text_encoder_2.config.d_model
        hidden = torch.zeros(len(texts), GLYPH_TOKENS, dim)
        mask = torch.zeros(len(texts), GLYPH_TOKENS, dtype=torch.int64)
        quoted = [i for i, glyph in enumerate(glyphs) if glyph is not None]
        if quoted:
            with self.placement.active("text_encoder_2", self.text_encoder_2) as encoder:
                device = next(encoder.parameters()).device
                for i in quoted:  # one call each: the reference encodes quoted prompts one at a time
                    tokens = self.tokenizer_2(glyphs[i], padding="max_length", max_length=GLYPH_TOKENS,
                                              truncation=True, add_special_tokens=True, return_tensors="pt").to(device)
                    hidden[i] = encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask.float())[0][0].cpu()
                    mask[i] = tokens.attention_mask[0].cpu()
        return hidden, mask

    def encode(self, texts: list[str]) -> list[dict]:
        """The DiT's text inputs for each text (batch 1 each): its real tokens only, all-true masks."""
        hidden, mask = self.encode_qwen(texts)
        hidden_2, mask_2 = self.encode_glyphs(texts)
        device, dtype = self.placement.device, self.out_dtype
        out = []
        for i in range(len(texts)):
            branch = {}
            for key, states, valid in (("", hidden[i], mask[i]), ("_2", hidden_2[i], mask_2[i])):
                keep = valid.bool()
                branch[f"encoder_hidden_states{key}"] = states[keep.to(states.device)].unsqueeze(0).to(device=device, dtype=dtype)
                branch[f"encoder_attention_mask{key}"] = valid[keep].unsqueeze(0).to(device)
            out.append(branch)
        return out

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        for req, (cond, uncond) in zip(reqs, encode_branches(reqs, lambda req: req.do_cfg, self.encode)):
            req.cond_kwargs, req.uncond_kwargs = cond, uncond
        return reqs
