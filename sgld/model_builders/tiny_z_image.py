"""Tiny random-weight Z-Image (Tongyi-MAI/Z-Image-Turbo layout), built offline.

The text encoder is a real ``Qwen3Model`` with a few layers; the tokenizer is the byte-level
Qwen2 BPE trained here (``tiny_qwen``) with a chat template that renders what Qwen3's does for a
single user turn with ``add_generation_prompt`` (and the empty think block when thinking is off).
The DiT is a real ``ZImageTransformer2DModel``, the VAE FLUX's ``AutoencoderKL`` layout.
"""

from __future__ import annotations

from pathlib import Path

from sgld.model_builders.tiny_parts import build_tiny_flux_vae, scale_parameters_

# What Qwen3's chat template renders for [{"role": "user", ...}] with add_generation_prompt=True.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def build_qwen3_tokenizer():
    """The offline Qwen2 BPE (``tiny_qwen``) with the Qwen3 chat template's single-turn rendering."""
    from sgld.model_builders.tiny_qwen import build_qwen2_tokenizer

    tokenizer = build_qwen2_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_z_image(folder: Path) -> None:
    """Write a tiny Z-Image (text-to-image, Qwen3 text encoder) model into ``folder``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_qwen3_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(0)
    # Three layers: the pipeline takes the second-to-last hidden state.
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=4096, rms_norm_eps=1e-6,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )).eval()
    torch.manual_seed(1)
    latent_channels = 4
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=latent_channels, dim=32, n_layers=2,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32, axes_dims=[4, 6, 6], axes_lens=[256, 64, 64],
    )
    # Make the prompt matter: a strong caption embedding into the joint sequence.
    scale_parameters_([transformer.cap_embedder], 6.0)
    torch.manual_seed(2)
    vae = build_tiny_flux_vae(latent_channels)
    scale_parameters_([vae.decoder.conv_out], 2.5)
    # Z-Image-Turbo's scheduler: a fixed shift of 3, no resolution-dependent shift.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                   transformer=transformer).save_pretrained(folder, safe_serialization=True)
