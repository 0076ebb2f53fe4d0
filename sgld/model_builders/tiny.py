"""Tiny random-weight models in diffusers folder layout, built offline for tests and demos.

Each builder makes real diffusers / transformers classes with a few layers, seeds every
initialisation, and saves through the diffusers pipeline class, so the folder loads with
``diffusers.<Pipeline>.from_pretrained`` as well as with sgld. Random weights barely
let the prompt move the output, so the text path (text projection and cross-attention) is
scaled up until prompt, seed and guidance each change the frames clearly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from sgld.variants import VARIANTS
from sgld.model_builders.tiny_parts import (
    build_clip_tokenizer, build_t5_tokenizer, build_tiny_clip_text_encoder, build_tiny_flux_vae, scale_parameters_,
)

def _tiny_wan_transformer(seed: int, text_dim: int, channels: int, in_channels: int | None = None,
                          image_dim: int | None = None):
    """A 2-block Wan DiT; ``in_channels`` > ``channels`` for image-to-video (mask + condition latents
    concatenated), ``image_dim`` for Wan2.1 I2V's CLIP image tokens."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    heads, head_dim = 2, 12
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels or channels,
        out_channels=channels,
        image_dim=image_dim,
        added_kv_proj_dim=heads * head_dim if image_dim is not None else None,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=48,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    )
    # Make the prompt matter: strong text projection and cross-attention values/outputs.
    scale_parameters_([model.condition_embedder.text_embedder], 3.0)
    scale_parameters_([blk.attn2.to_v for blk in model.blocks] + [blk.attn2.to_out[0] for blk in model.blocks], 6.0)
    scale_parameters_([model.proj_out], 4.0)
    return model


def build_tiny_wan(folder: Path, two_experts: bool, ti2v: bool = False, i2v: bool = False) -> None:
    """Write a tiny Wan model (one or two experts, Wan2.2 TI2V's layout, or image-to-video) into ``folder``.

    ``ti2v``: the Wan2.2 TI2V-5B layout — a residual VAE with 2x2 pixel patches (16x spatial
    compression) and ``expand_timesteps`` (one timestep per latent token).
    ``i2v``: ``WanImageToVideoPipeline``'s layout — the DiT takes noise, a 4-channel frame mask
    and the condition latents on the channel axis; with one expert (Wan2.1 I2V) it also
    cross-attends to CLIP vision tokens of the input image, with two (Wan2.2 I2V A14B) it does not.
    """
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_t5_tokenizer()
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    channels = 4
    image_encoder = image_processor = None
    dit = dict(text_dim=32, channels=channels)
    if i2v:
        dit["in_channels"] = 2 * channels + 4  # noise + frame mask (temporal factor 4) + condition
        if not two_experts:
            image_encoder, image_processor = _tiny_clip_vision()
            dit["image_dim"] = image_encoder.config.hidden_size
    transformer = _tiny_wan_transformer(1, **dit)
    transformer_2 = _tiny_wan_transformer(2, **dit) if two_experts else None
    if i2v:  # make the input image matter: strong weights on the mask + condition input channels
        for expert in filter(None, (transformer, transformer_2)):
            with torch.no_grad():
                expert.patch_embedding.weight[:, channels:].mul_(6.0)
    torch.manual_seed(3)
    ti2v_vae = dict(decoder_base_dim=16, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                    scale_factor_spatial=16) if ti2v else {}
    vae = AutoencoderKLWan(
        base_dim=16,
        z_dim=channels,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * channels,
        latents_std=[1.0] * channels,
        **ti2v_vae,
    )
    # A wider pixel range, so latent differences show in the frames.
    scale_parameters_([vae.decoder.conv_out], 2.5)
    if i2v:  # encoded input images with a latent spread like the noise's, so the image shows
        scale_parameters_([vae.quant_conv], 4.0)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    common = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                  transformer=transformer, transformer_2=transformer_2, boundary_ratio=0.875 if two_experts else None)
    if i2v:
        pipe = WanImageToVideoPipeline(image_encoder=image_encoder, image_processor=image_processor, **common)
    else:
        pipe = WanPipeline(expand_timesteps=ti2v, **common)
    pipe.save_pretrained(folder, safe_serialization=True)


def _tiny_clip_vision():
    """A 2-layer CLIP vision tower on 32x32 crops (Wan2.1 I2V uses the penultimate layer's tokens)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(4)
    encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=16,
    )).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return encoder, processor


def build_tiny_flux(folder: Path) -> None:
    """Write a tiny FLUX.1-dev-style model (CLIP + T5 encoders, guidance-distilled DiT) into ``folder``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(0)
    text_encoder = build_tiny_clip_text_encoder(tokenizer, hidden_size=32)
    torch.manual_seed(1)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    ).eval()
    torch.manual_seed(2)
    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )
    scale_parameters_([transformer.context_embedder], 4.0)
    scale_parameters_([transformer.time_text_embed.text_embedder, transformer.time_text_embed.guidance_embedder], 4.0)
    torch.manual_seed(3)
    vae = build_tiny_flux_vae(latent_channels)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    ).save_pretrained(folder, safe_serialization=True)


# Each built-in tiny model's builder, from the one variant table (sgld/variants.py).
TINY_BUILDERS: dict[str, Callable[[Path], None]] = {v.name: v.build for v in VARIANTS if v.tiny}



# Bump when a builder changes, so old folders are rebuilt instead of silently reused.
TINY_FORMAT_VERSION = "2"


def sgld_home() -> Path:
    """Where sgld keeps built models: $SGLD_HOME, default ~/.cache/sgld."""
    return Path(os.environ.get("SGLD_HOME", Path.home() / ".cache" / "sgld"))


def materialize_tiny(name: str) -> Path:
    """Return the folder of built-in tiny model ``name``, building it once if missing."""
    return build_once(sgld_home() / "models" / name, TINY_BUILDERS[name], TINY_FORMAT_VERSION)


def build_once(folder: Path, builder, version: str) -> Path:
    """``folder``, built by ``builder(tmp_folder)`` unless a build of ``version`` is already there.

    Processes that ask at the same time (the ranks of a torchrun group) take turns on a
    file lock: the first builds, in a temporary folder renamed into place, and the others
    find the finished folder.
    """
    from filelock import FileLock

    stamp = folder / ".sgld-tiny-version"

    def ready() -> bool:
        return stamp.is_file() and stamp.read_text() == version

    if ready():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if ready():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            builder(tmp)
            (tmp / ".sgld-tiny-version").write_text(version)
            if folder.exists():  # an older format version
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
