"""Pieces shared by the tiny-model builders: the word list, in-memory tokenizers, a small CLIP text tower."""

from __future__ import annotations

import string

# Words the tiny tokenizer knows whole; anything else falls back to single characters.
WORDS = (
    "a an the and of in on with at to over under through by from is are red blue green yellow white black "
    "orange purple golden silver fox cat dog bird horse raccoon robot woman man child city street forest "
    "snow rain sea ocean river mountain sky night sunset sunrise light fire water piano stage playing "
    "running walking jumping flying dancing curious calico cute beautiful dress fresh slow fast camera "
    "shot close up wide view cinematic style video image photo painting gpu cluster hacking"
).split()


def build_t5_tokenizer():
    """A T5/UMT5-style Unigram tokenizer built in memory (pad=0, eos=1, unk=2), no downloads."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -2.0) for w in WORDS]
    vocab += [("\u2581", -4.0)]
    vocab += [(c, -6.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def scale_parameters_(modules, factor: float) -> None:
    """Multiply every parameter of ``modules`` by ``factor`` (to make a text path matter in a random model)."""
    import torch

    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.mul_(factor)


def build_clip_tokenizer():
    """A CLIP-style BPE tokenizer over single characters; ``<|endoftext|>`` has the highest id.

    FLUX's CLIP config keeps the legacy ``eos_token_id=2``, so transformers pools at
    ``argmax(input_ids)``: the end token must be the largest id for pooling to land on it.
    """
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab, merges=[], model_max_length=77, unk_token="<|endoftext|>",
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


def build_tiny_clip_text_encoder(tokenizer, hidden_size: int):
    """A 2-layer CLIP text tower for ``build_clip_tokenizer()``'s ids (seed it before calling).

    Keeps the legacy ``eos_token_id=2`` of the released FLUX/Hunyuan configs: pooling then
    lands on ``argmax(input_ids)``, the end token.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=len(tokenizer) - 2, eos_token_id=2,
        pad_token_id=len(tokenizer) - 1, projection_dim=hidden_size,
    )).eval()


def build_tiny_flux_vae(latent_channels: int):
    """FLUX's AutoencoderKL layout at tiny size (4 levels of 16 channels); seed before calling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 16, 16, 16], layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=64, scaling_factor=0.5, shift_factor=0.1,
        use_quant_conv=False, use_post_quant_conv=False,
    )
