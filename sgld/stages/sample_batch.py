"""Several requests as one DiT batch: their per-sample inputs stacked on the batch axis.

Requests that share a batch have the same output size, step count and scheduler settings (the
family's ``batch_key``); what differs per sample (text embeddings, guidance inputs, condition
latents) is concatenated. Text of different lengths (Qwen-Image's prompts) is zero-padded at the
end with a mask that hides the padding from attention, as the reference pipelines pad a batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from sgld.request import Request

# DiT inputs without a batch axis (position ids of the image and text tokens): one for the whole batch.
SHARED_INPUTS = frozenset({"img_ids", "txt_ids"})
TEXT, TEXT_MASK = "encoder_hidden_states", "encoder_hidden_states_mask"
# Text inputs that may differ in length, and the mask key each family's DiT reads beside them.
TEXT_INPUTS = {TEXT: (TEXT_MASK, "encoder_attention_mask"), "encoder_hidden_states_2": ("encoder_attention_mask_2",)}


def _mask_key(branch: dict, text: str) -> str:
    """The key of ``text``'s mask in ``branch``: the one it has, else the first this text takes."""
    keys = TEXT_INPUTS[text]
    return next((key for key in keys if key in branch), keys[0])


def pad_to_one_length(*branches: dict) -> tuple[dict, ...]:
    """Zero-pad every branch's text inputs (``TEXT_INPUTS``) to the longest, with masks marking the real tokens.

    Branches already of one length and without masks come back unchanged (no mask: attention keeps
    its fastest kernel). A branch that has a mask keeps it (as bool), extended with False. Text
    positions (RoPE) count from the start, so padding at the end moves no real token.
    """
    for text in TEXT_INPUTS:
        if text not in branches[0]:
            continue
        mask_key = _mask_key(branches[0], text)
        lengths = [b[text].shape[1] for b in branches]
        longest = max(lengths)
        if min(lengths) == longest and all(b.get(mask_key) is None for b in branches):
            continue
        padded = []
        for branch, length in zip(branches, lengths):
            hidden = branch[text]
            mask = branch.get(mask_key)
            if mask is None:
                mask = torch.ones(hidden.shape[0], length, dtype=torch.bool, device=hidden.device)
            mask = torch.nn.functional.pad(mask.to(torch.bool), (0, longest - length), value=False)
            padded.append({**branch, text: torch.nn.functional.pad(hidden, (0, 0, 0, longest - length)),
                           mask_key: mask})
        branches = tuple(padded)
    return tuple(branches)


def stack_inputs(inputs: list[dict]) -> dict:
    """One DiT keyword dict for the batch: tensors concatenated on dim 0, lists joined, shared inputs taken once."""
    if len(inputs) == 1:
        return inputs[0]
    if TEXT in inputs[0]:
        inputs = list(pad_to_one_length(*inputs))
    stacked = {}
    for key, first in inputs[0].items():
        values = [d[key] for d in inputs]
        if key in SHARED_INPUTS or first is None or not isinstance(first, (torch.Tensor, list)):
            stacked[key] = first
        elif isinstance(first, list):
            stacked[key] = [item for value in values for item in value]
        else:
            stacked[key] = torch.cat(values)
    return stacked


def _cat(values: list) -> Optional[torch.Tensor]:
    return None if values[0] is None else torch.cat(values)


def merge_requests(reqs: list[Request], one_text_length: bool = False) -> Request:
    """A Request whose DiT inputs are those of ``reqs`` stacked in order (the first one's, for a batch of one).

    ``one_text_length``: cond and uncond text padded to one length too, so both branches can run in one
    forward (batched CFG).
    """
    if len(reqs) == 1:
        return reqs[0]
    first = reqs[0]
    cond = [r.cond_kwargs for r in reqs]
    uncond = None if first.uncond_kwargs is None else [r.uncond_kwargs for r in reqs]
    if uncond is not None and one_text_length and TEXT in cond[0]:
        both = stack_inputs(cond + uncond)
        half = len(reqs)
        cond_kwargs = {k: v[:half] if isinstance(v, torch.Tensor) else v for k, v in both.items()}
        uncond_kwargs = {k: v[half:] if isinstance(v, torch.Tensor) else v for k, v in both.items()}
    else:
        cond_kwargs = stack_inputs(cond)
        uncond_kwargs = None if uncond is None else stack_inputs(uncond)
    return replace(
        first,
        cond_kwargs=cond_kwargs,
        uncond_kwargs=uncond_kwargs,
        model_kwargs=stack_inputs([r.model_kwargs for r in reqs]),
        condition_tokens=_cat([r.condition_tokens for r in reqs]),
        condition_channels=_cat([r.condition_channels for r in reqs]),
        first_frame_latents=_cat([r.first_frame_latents for r in reqs]),
        clean_tokens=_cat([r.clean_tokens for r in reqs]),
        timings={},
    )
