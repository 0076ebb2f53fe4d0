"""Tiny random-weight Qwen-Image and Qwen-Image-Edit models, built offline.

The text encoder is a real ``Qwen2_5_VLForConditionalGeneration`` with a few layers and
the tokenizer a byte-level BPE trained here on the pipelines' prompt templates, so every
template word is one token and the reference's fixed template cut (34 tokens for
Qwen-Image, 64 for Edit) lands exactly where the user's prompt starts, as with the real
tokenizer. The Edit model's ``processor/`` folder is laid out as in Qwen/Qwen-Image-Edit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sgld.model_builders.tiny_parts import WORDS, scale_parameters_

# The reference pipelines' templates (diffusers QwenImagePipeline / QwenImageEditPipeline).
T2I_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where appropriate."
    "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
)
# Qwen2's special tokens, in the real vocabulary's order (they follow the BPE tokens).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]


def build_qwen2_tokenizer(corpus: tuple[str, ...] = (T2I_TEMPLATE.format(""), EDIT_TEMPLATE.format("")),
                          max_merges: int | None = None):
    """A Qwen2 byte-level BPE tokenizer trained on ``corpus`` (the Qwen-Image templates) and the tiny word list.

    ``max_merges`` keeps only that many merges (fewer merges: more tokens per text), to make a
    template prefix split into the token count the real tokenizer gives.
    """
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen2_bpe(corpus)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges[:max_merges], model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def _qwen2_bpe(corpus: tuple[str, ...]) -> tuple[dict, list]:
    """Vocabulary and merges of a byte-level BPE trained on ``corpus`` (special tokens split out) and WORDS."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    specials = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))
    texts = [part for t in corpus for part in specials.split(t) if part]
    texts.append(" ".join(WORDS))
    # A vocabulary larger than the corpus needs: training runs until every word is one token.
    trainer = trainers.BpeTrainer(vocab_size=8192, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)})
    return vocab, [tuple(m) for m in model["merges"]]


def _tiny_text_encoder(tokenizer):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    hidden = 32
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6,
            # head_dim 16: the multimodal rope sections (t, h, w) add up to head_dim / 2.
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=hidden,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _tiny_parts(seed_offset: int = 0):
    """Tokenizer, text encoder, DiT, VAE and scheduler shared by both tiny Qwen models."""
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    tokenizer = build_qwen2_tokenizer()
    text_encoder = _tiny_text_encoder(tokenizer)
    latent_channels = 4
    torch.manual_seed(1 + seed_offset)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * latent_channels, out_channels=latent_channels, num_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
    )
    # Make the prompt matter: a strong text projection into the joint attention, and text
    # keys sharp enough to be attended next to Edit's thousands of condition-image tokens.
    blocks = transformer.transformer_blocks
    scale_parameters_([transformer.txt_in], 4.0)
    scale_parameters_([blk.attn.add_v_proj for blk in blocks], 24.0)
    scale_parameters_([blk.attn.to_out[0] for blk in blocks], 2.0)
    scale_parameters_([blk.attn.norm_added_k for blk in blocks], 6.0)
    torch.manual_seed(2)
    vae = AutoencoderKLQwenImage(
        base_dim=16, z_dim=latent_channels, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * latent_channels,
        latents_std=[1.0] * latent_channels,
    )
    scale_parameters_([vae.decoder.conv_out], 2.5)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, time_shift_type="exponential",
        base_shift=0.5, max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
    )
    return tokenizer, text_encoder, transformer, vae, scheduler


def build_tiny_qwen_image(folder: Path) -> None:
    """Write a tiny Qwen-Image (text-to-image) model into ``folder``."""
    from diffusers import QwenImagePipeline

    tokenizer, text_encoder, transformer, vae, scheduler = _tiny_parts()
    QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                      transformer=transformer).save_pretrained(folder, safe_serialization=True)


def build_qwen2vl_processor(tokenizer):
    """The Qwen2-VL processor with Qwen-Image-Edit's image settings, built from its PIL image processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from sgld.processors import qwen2vl_processor

    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711], resample=3,
    )
    return qwen2vl_processor(image_processor, tokenizer)


def build_tiny_qwen_image_edit(folder: Path) -> None:
    """Write a tiny Qwen-Image-Edit (text+image-to-image) model into ``folder``."""
    from diffusers import QwenImageEditPipeline

    tokenizer, text_encoder, transformer, vae, scheduler = _tiny_parts(seed_offset=10)
    processor = build_qwen2vl_processor(tokenizer)
    # transformers cannot save a processor without its video processor; the processor/
    # folder is written by hand below, in the real repo's layout.
    QwenImageEditPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          processor=None, transformer=transformer).save_pretrained(folder, safe_serialization=True)
    save_processor(processor, folder / "processor")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def build_tiny_qwen_image_edit_plus(folder: Path) -> None:
    """Write a tiny Qwen-Image-Edit-Plus (several input images) model into ``folder``: Edit's layout, the Plus pipeline."""
    from diffusers import QwenImageEditPlusPipeline

    tokenizer, text_encoder, transformer, vae, scheduler = _tiny_parts(seed_offset=20)
    QwenImageEditPlusPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              processor=None, transformer=transformer).save_pretrained(folder, safe_serialization=True)
    save_processor(build_qwen2vl_processor(tokenizer), folder / "processor")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def save_processor(processor, folder: Path) -> None:
    """Write a Qwen2-VL processor folder (image, video and tokenizer configs) loadable with or without torchvision."""
    folder.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2VLProcessor")
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    video = dict(config, video_processor_type="Qwen2VLVideoProcessor")
    video.pop("image_processor_type")
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")
