"""Tiny HunyuanVideo (Llama + CLIP text encoders, dual/single-stream DiT, 3D causal VAE), built offline."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from sgld.model_builders.tiny_parts import WORDS, build_clip_tokenizer, build_tiny_clip_text_encoder, scale_parameters_

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# The reference drops this many leading tokens (BOS + the system part of its prompt template):
# the count the real Llama-3 tokenizer gives. The tiny tokenizer is built to give the same.
TEMPLATE_TOKENS = 95


def build_llama_tokenizer():
    """A Llama tokenizer (BPE over ▁-prefixed words) that splits Hunyuan's template prefix into 95 tokens.

    BPE is trained on the template and the tiny word list, then only as many merges are kept
    as leave the template's system part at exactly ``TEMPLATE_TOKENS`` tokens, so the
    reference's fixed crop lands where the prompt starts, as it does with the real tokenizer.
    """
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    template = DEFAULT_PROMPT_TEMPLATE["template"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    specials = re.compile("|".join(re.escape(s) for s in LLAMA_SPECIALS))
    texts = [part for part in specials.split(template.format("")) if part] + [" ".join(WORDS)]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8192, show_progress=False, special_tokens=["<unk>"],
                                                       initial_alphabet=list(string.printable)))
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab.update({token: len(vocab) + i for i, token in enumerate(LLAMA_SPECIALS)})
    merges = [tuple(m) for m in model["merges"]]

    def tokenizer_with(n_merges: int):
        tok = LlamaTokenizerFast(vocab=vocab, merges=merges[:n_merges], bos_token="<|begin_of_text|>",
                                 eos_token="<|eot_id|>", pad_token="<|end_of_text|>", unk_token="<unk>",
                                 add_bos_token=True, padding_side="right", model_max_length=131072)
        tok.add_special_tokens({"additional_special_tokens": LLAMA_SPECIALS[2:]})
        return tok

    prefix = template.split("{}")[0]
    low, high = 0, len(merges)  # fewer merges -> more tokens: keep the most that give >= TEMPLATE_TOKENS
    while low < high:
        mid = (low + high + 1) // 2
        if len(tokenizer_with(mid)(prefix).input_ids) >= TEMPLATE_TOKENS:
            low = mid
        else:
            high = mid - 1
    tokenizer = tokenizer_with(low)
    count = len(tokenizer(prefix).input_ids)
    if count != TEMPLATE_TOKENS:
        raise RuntimeError(f"tiny Llama tokenizer splits the template into {count} tokens, not {TEMPLATE_TOKENS}")
    return tokenizer


def build_tiny_hunyuan(folder: Path) -> None:
    """Write a tiny HunyuanVideo model (``HunyuanVideoPipeline`` layout) into ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    tokenizer, tokenizer_2 = build_llama_tokenizer(), build_clip_tokenizer()
    torch.manual_seed(0)
    # Three layers: the reference reads the hidden states two layers before the last.
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )).eval()
    torch.manual_seed(1)
    text_encoder_2 = build_tiny_clip_text_encoder(tokenizer_2, hidden_size=16)
    torch.manual_seed(2)
    latent_channels = 4
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=latent_channels, out_channels=latent_channels, num_attention_heads=2, attention_head_dim=12,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=32, pooled_projection_dim=16, rope_axes_dim=(4, 4, 4),
    )
    # Make the prompt matter (random weights barely let it through).
    scale_parameters_([transformer.context_embedder.proj_in, transformer.time_text_embed.text_embedder], 4.0)
    scale_parameters_([transformer.proj_out], 3.0)
    torch.manual_seed(3)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=latent_channels, block_out_channels=(16, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
    )
    scale_parameters_([vae.decoder.conv_out], 2.5)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    HunyuanVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae, scheduler=scheduler,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    ).save_pretrained(folder, safe_serialization=True)
