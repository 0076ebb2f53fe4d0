"""Tiny random-weight HunyuanVideo-1.5 (text-to-video and image-to-video), built offline.

The layout is the ``hunyuanvideo-community/HunyuanVideo-1.5-*`` Diffusers folders': a Qwen2.5-VL
language model with a Qwen2 tokenizer whose chat template renders the system and user turns, a
ByT5 encoder for quoted text (``ByT5Tokenizer`` needs no files), the 1.5 DiT, its VAE and a
classifier-free guider; the image-to-video folder adds a SigLIP vision tower and its processor.
The tokenizer is trained here so the template's system part is exactly 108 tokens, the count the
real tokenizer gives and the reference crops, so the crop lands where the prompt starts.
"""

from __future__ import annotations

from pathlib import Path

from sgld.model_builders.tiny_parts import scale_parameters_

# What Qwen2.5-VL's chat template renders for a system turn and a user turn with add_generation_prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TARGET_SIZE = 64  # the tiny DiT's bucket side in pixels (the released 480p models: 640)


def _reference_template() -> tuple[str, int]:
    """The reference's system message and how many template tokens it crops (its prompt encoder's defaults)."""
    import inspect

    from diffusers import HunyuanVideo15Pipeline

    defaults = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters
    return defaults["system_message"].default, defaults["crop_start"].default


def build_qwen25vl_tokenizer():
    """The offline Qwen2 BPE with the chat template, keeping as many merges as split the prefix into 108 tokens."""
    from sgld.model_builders.tiny_qwen import _qwen2_bpe, build_qwen2_tokenizer

    system, template_tokens = _reference_template()
    prefix = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"  # what the crop removes
    corpus = (prefix,)
    _, merges = _qwen2_bpe(corpus)

    def count(n: int) -> int:
        return len(build_qwen2_tokenizer(corpus, n)(prefix).input_ids)

    low, high = 0, len(merges)  # fewer merges -> more tokens: the most merges that give >= template_tokens
    while low < high:
        mid = (low + high + 1) // 2
        if count(mid) >= template_tokens:
            low = mid
        else:
            high = mid - 1
    tokenizer = build_qwen2_tokenizer(corpus, low)
    found = len(tokenizer(prefix).input_ids)
    if found != template_tokens:
        raise RuntimeError(f"tiny Qwen2 tokenizer splits the template into {found} tokens, not {template_tokens}")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny_parts(seed: int):
    """Tokenizers, text encoders, DiT, VAE, scheduler and guider shared by both tiny models."""
    import torch
    from diffusers import (
        AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = build_qwen25vl_tokenizer(), ByT5Tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(seed)
    # Three layers: the reference reads the hidden states two layers before the last.
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )).eval()
    torch.manual_seed(seed + 1)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    torch.manual_seed(seed + 2)
    latent_channels = 4
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent_channels + 1, out_channels=latent_channels, num_attention_heads=2,
        attention_head_dim=12, num_layers=2, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1,
        text_embed_dim=32, text_embed_2_dim=16, image_embed_dim=16, rope_axes_dim=(4, 4, 4), target_size=TARGET_SIZE,
    )
    # Make the prompt, the quoted text and the first frame matter (random weights barely let them through).
    scale_parameters_([transformer.context_embedder.proj_in, transformer.context_embedder_2], 4.0)
    scale_parameters_([transformer.image_embedder], 4.0)
    scale_parameters_([transformer.proj_out], 3.0)
    torch.manual_seed(seed + 3)
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=latent_channels, block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1,
        spatial_compression_ratio=16, temporal_compression_ratio=4, scaling_factor=1.03682,
    )
    scale_parameters_([vae.decoder.conv_out], 2.5)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    guider = ClassifierFreeGuidance(guidance_scale=6.0)
    return dict(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                scheduler=scheduler, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, guider=guider)


def build_tiny_hunyuan15_t2v(folder: Path) -> None:
    """Write a tiny HunyuanVideo-1.5 text-to-video model (``HunyuanVideo15Pipeline`` layout) into ``folder``."""
    from diffusers import HunyuanVideo15Pipeline

    HunyuanVideo15Pipeline(**_tiny_parts(seed=0)).save_pretrained(folder, safe_serialization=True)


def build_tiny_hunyuan15_i2v(folder: Path) -> None:
    """Write a tiny HunyuanVideo-1.5 image-to-video model (adds SigLIP) into ``folder``."""
    import torch
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    parts = _tiny_parts(seed=10)
    torch.manual_seed(20)
    image_encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
    )).eval()
    feature_extractor = SiglipImageProcessor(size={"height": 32, "width": 32})
    HunyuanVideo15ImageToVideoPipeline(image_encoder=image_encoder, feature_extractor=feature_extractor,
                                       **parts).save_pretrained(folder, safe_serialization=True)
