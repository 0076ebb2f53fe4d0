"""Tiny random-weight FLUX.2 [klein] (Qwen3 text encoder, FLUX.2 DiT and VAE), built offline.

The text encoder is a real ``Qwen3ForCausalLM`` with 28 small layers (the pipeline stacks the
hidden states of layers 9, 18 and 27); the tokenizer is the offline Qwen2 BPE with Qwen3's chat
template (``tiny_z_image``). The VAE's batch-norm statistics are set away from 0/1 so the latent
normalisation is exercised. ``is_distilled=False``: the base model, whose guidance is CFG.
"""

from __future__ import annotations

from pathlib import Path

from sgld.models.tiny_parts import scale_parameters_


def build_tiny_flux2_klein(folder: Path) -> None:
    """Write a tiny FLUX.2 [klein] base (text-to-image with CFG) model into ``folder``."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sgld.models.tiny_z_image import build_qwen3_tokenizer

    tokenizer = build_qwen3_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )).eval()
    torch.manual_seed(1)
    latent_channels = 4
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    # Make the prompt matter: a strong text embedding, and text values that carry into the image tokens.
    scale_parameters_([transformer.context_embedder], 8.0)
    scale_parameters_([block.attn.add_v_proj for block in transformer.transformer_blocks], 8.0)
    scale_parameters_([block.attn.to_out[0] for block in transformer.transformer_blocks], 3.0)
    torch.manual_seed(2)
    vae = AutoencoderKLFlux2(
        block_out_channels=(16, 16, 16, 16), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8,
        sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
    )
    with torch.no_grad():
        vae.bn.running_mean.uniform_(-0.5, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    scale_parameters_([vae.decoder.conv_out], 2.5)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                time_shift_type="exponential")
    Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                       transformer=transformer, is_distilled=False).save_pretrained(folder, safe_serialization=True)
