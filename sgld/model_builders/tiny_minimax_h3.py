"""Tiny random-weight MiniMax-H3 (video with stereo sound: text, keyframes or references in), built offline.

The folder has ``MiniMaxAI/MiniMax-H3``'s diffusers layout (diffusers' conversion script): ``model_index.json``
and ``modular_model_index.json`` naming every component with its loading spec, both transformer partitions
(``transformer/`` for t2va and fl2va, ``transformer_ref/`` for ref2va), the video VAE, the audio VAE, the two
schedulers (video shift 12, audio shift 3), the Qwen3-VL conditioner, its tokenizer and processor. It loads with
``MiniMaxH3ModularPipeline.from_pretrained(folder, workflow=...)`` + ``load_components()`` (without torchvision
the processor comes from ``qwen3vl_processor.load_qwen3vl_processor``).

What is kept from the release: 24 latent channels, 16x spatial / 4x temporal video compression with 17-frame
chunks (``17n + 5`` frames -> ``5n + 2`` latents), the (1, 2, 2) patch (a canvas multiple of 32), 32 audio
latent channels at 40 latents a second of 32 kHz mono (stereo as two batch items), the conditioner's
``hidden_states[50]`` (so the tiny Qwen3-VL has 51 decoder layers) and its image preprocessing. What is tiny:
every width and depth, and the canvas configs of ``modular_model_index.json`` (short edge 32 instead of 768,
reference images at a 64 short edge instead of 2048), so a default request is a 32x64 canvas. The pipeline's own
5-15 s window stays: the shortest request is 124 frames (37 latent frames, 207 audio latents a channel).
"""

from __future__ import annotations

import json
from pathlib import Path

from sgld.model_builders.qwen3vl_processor import qwen3vl_processor, save_qwen3vl_processor
from sgld.model_builders.tiny_parts import scale_parameters_
from sgld.model_builders.tiny_qwen import build_qwen2_tokenizer

REPO_ID = "MiniMaxAI/MiniMax-H3"
# MiniMax-H3 conditions on hidden_states[50] and refuses a conditioner of 50 layers or fewer.
TEXT_LAYERS = 51
TEXT_HIDDEN = 16
LATENT_CHANNELS = 24
AUDIO_LATENT_CHANNELS = 32
# The pipeline's canvas configs (released: 768, 768 * 1344, 2048), scaled down so defaults stay tiny.
CANVAS = {"canvas_short_edge": 32, "canvas_max_pixels": 32 * 56, "reference_image_short_edge": 64}
# The labels the pipeline puts before keyframes and references, so they tokenize into few tokens.
LABELS = tuple(f"<{kind} {i}>: " for kind in ("Picture", "Audio", "Video") for i in range(1, 10)) + tuple(
    f"<{t / 10:.1f} seconds>" for t in range(0, 160, 2))
# diffusers' converted index names each component's class; processor and tokenizer are Qwen3-VL's.
COMPONENTS = {
    "text_encoder": ("transformers", "Qwen3VLForConditionalGeneration"),
    "tokenizer": ("transformers", "Qwen2TokenizerFast"),
    "processor": ("transformers", "Qwen3VLProcessor"),
    "vae": ("diffusers", "AutoencoderKLMiniMaxH3"),
    "audio_vae": ("diffusers", "AutoencoderKLMiniMaxH3Audio"),
    "transformer": ("diffusers", "MiniMaxH3Transformer3DModel"),
    "transformer_ref": ("diffusers", "MiniMaxH3Transformer3DModel"),
    "scheduler": ("diffusers", "MiniMaxH3Scheduler"),
    "audio_scheduler": ("diffusers", "MiniMaxH3Scheduler"),
}


def build_h3_tokenizer():
    """Qwen2-style byte-level BPE with Qwen3-VL's vision tokens, trained on the word list and the H3 labels."""
    return build_qwen2_tokenizer(corpus=LABELS)


def _tiny_text_encoder(tokenizer, seed: int):
    """A ``Qwen3VLForConditionalGeneration``: 51 decoder layers of width 16, a 1-block vision tower."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=32, num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
            # The multimodal rope sections (t, h, w) add up to head_dim / 2, interleaved as Qwen3-VL's are.
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2],
                             "mrope_interleaved": True},
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=TEXT_HIDDEN,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    # Token embeddings at init (std 0.02) are no larger than what each random layer adds, and after 50 layers a
    # vision block ahead of the prompt made two prompts' hidden states alike (a new prompt moved fl2va frames by
    # 6/255); 10x keeps each token's own embedding in its hidden state. The vision tower's mergers, whose output
    # takes the image tokens' place (std ~0.01 at init), are raised to the same scale so images show through too.
    visual = model.model.visual
    scale_parameters_([model.model.language_model.embed_tokens], 10.0)
    scale_parameters_([visual.merger.linear_fc2, *(m.linear_fc2 for m in visual.deepstack_merger_list)], 20.0)
    return model


def _tiny_transformer(seed: int):
    """A 2-block DiT (2 heads of 32, width 64) on the released latent widths and patch."""
    import torch
    from diffusers import MiniMaxH3Transformer3DModel

    torch.manual_seed(seed)
    transformer = MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=32, hidden_size=64, num_layers=2, num_refiner_layers=1, ffn_dim=128,
        in_channels=LATENT_CHANNELS, audio_in_channels=AUDIO_LATENT_CHANNELS, patch_size=(1, 2, 2),
        text_dim=TEXT_HIDDEN, freq_dim=32, time_embed_hidden_dim=64, time_embed_dim=32, rope_freq_dim=4,
    )
    _make_conditions_matter(transformer)
    return transformer


def _make_conditions_matter(transformer) -> None:
    """Let the few text and condition rows move the media rows of a sequence ~100x longer.

    Text, keyframes and references reach the generated rows only through self-attention over the packed sequence,
    where 6 prompt rows or 2 keyframe rows share the softmax with ~500 media rows, and pre-norm blocks with q/k
    norms leave the per-modality AdaLN table as the one lever that tells rows apart. At random init a new prompt
    moved frames by 1/255. Larger attention values for text rows (x21) and video-tagged rows (x5: the generated
    video, the keyframe and reference latents, and the conditioner's vision blocks), open attention gates for video
    and audio rows and stronger output heads make every input move frames by 49/255 or more.
    """
    import torch
    from diffusers.modular_pipelines.minimax_h3.modular_pipeline import (
        MINIMAX_H3_AUDIO_TAG, MINIMAX_H3_TEXT_TAG, MINIMAX_H3_VIDEO_TAG)
    from diffusers.models.transformers.transformer_minimax_h3 import MINIMAX_H3_MODALITY_NUM

    hidden = transformer.config.hidden_size
    with torch.no_grad():
        for block in transformer.transformer_blocks:
            # Rows of the AdaLN table per modality: shift, scale, gate of attention, then of the feed-forward.
            table = block.adaln_proj.linear.bias.view(MINIMAX_H3_MODALITY_NUM, 6, hidden)
            table[MINIMAX_H3_TEXT_TAG, 1] += 20.0
            table[MINIMAX_H3_VIDEO_TAG, 1] += 4.0
            table[[MINIMAX_H3_VIDEO_TAG, MINIMAX_H3_AUDIO_TAG], 2] += 2.0
    scale_parameters_([transformer.proj_out, transformer.audio_proj_out], 3.0)


def _tiny_video_vae(seed: int):
    """The causal CNN encoder (16x space, 4x time, 17-frame chunks) and a 1-block ViT decoder, 8 channels wide."""
    import torch
    from diffusers import AutoencoderKLMiniMaxH3

    torch.manual_seed(seed)
    vae = AutoencoderKLMiniMaxH3(
        latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        spatial_downsample_factors=(2, 2, 2, 2), temporal_downsample_factors=(1, 2, 2, 1), norm_num_groups=4,
        decoder_num_layers=1, decoder_num_attention_heads=2, decoder_attention_head_dim=16, decoder_ffn_mult=2,
        latents_mean=tuple(torch.empty(LATENT_CHANNELS).uniform_(-0.2, 0.2).tolist()),
        latents_std=tuple(torch.empty(LATENT_CHANNELS).uniform_(0.7, 1.3).tolist()),
    )
    # Keyframes and references are encoded by *sampling* the posterior. At init its log-variance is ~0 and its mean
    # ~0.1, so a keyframe's latent was mostly that sample's noise; a trained encoder's posterior is narrow
    # (sigma 0.02 here) around a mean of unit scale.
    with torch.no_grad():
        weight_mean, weight_logvar = vae.quant_conv.weight.chunk(2)
        bias_mean, bias_logvar = vae.quant_conv.bias.chunk(2)
        weight_mean.mul_(8.0)
        bias_mean.mul_(8.0)
        weight_logvar.zero_()
        bias_logvar.fill_(-8.0)
    # A wider pixel range (more of it unclamped) so latent changes show in the frames.
    scale_parameters_([vae.decoder.proj_out], 2.0)
    return vae


def _tiny_audio_vae(seed: int):
    """DAC encoder and BigVGAN decoder, 800-sample hop at 32 kHz (40 latents a second) in three stages."""
    import torch
    from diffusers import AutoencoderKLMiniMaxH3Audio

    torch.manual_seed(seed)
    vae = AutoencoderKLMiniMaxH3Audio(
        encoder_dim=4, encoder_rates=(8, 10, 10), latent_dim=AUDIO_LATENT_CHANNELS,
        latent_channels=AUDIO_LATENT_CHANNELS, num_attention_heads=2, decoder_dim=16, decoder_rates=(10, 10, 8),
        # The release pairs rate u with kernel 2u - (u % 2).
        decoder_kernel_sizes=(20, 20, 16), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
        sampling_rate=32000,
        latents_mean=torch.empty(AUDIO_LATENT_CHANNELS).uniform_(-0.2, 0.2).tolist(),
        latents_std=torch.empty(AUDIO_LATENT_CHANNELS).uniform_(0.7, 1.3).tolist(),
    )
    # At init BigVGAN's last convolution gives a waveform of std 0.01; ~0.1 keeps changes in it clear of zero.
    scale_parameters_([vae.decoder.conv_post], 10.0)
    return vae


def _write_indexes(folder: Path, diffusers_version: str) -> None:
    """``model_index.json`` and ``modular_model_index.json`` as diffusers' conversion writes them for the Hub repo.

    The entries point at the Hub id, as in a local copy of the repo: the modular pipeline loads each component
    from the folder when its files are there, and the index does not depend on where the folder was built.
    """
    index = {"_class_name": "MiniMaxH3Pipeline", "_diffusers_version": diffusers_version,
             **{name: list(entry) for name, entry in COMPONENTS.items()}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    modular = {"_class_name": "MiniMaxH3ModularPipeline", "_diffusers_version": diffusers_version,
               "_blocks_class_name": "MiniMaxH3Blocks", **CANVAS}
    for name, (library, class_name) in COMPONENTS.items():
        modular[name] = [library, class_name, {
            "type_hint": [library, class_name], "pretrained_model_name_or_path": REPO_ID, "subfolder": name,
            "variant": None, "revision": None}]
    (folder / "modular_model_index.json").write_text(json.dumps(modular, indent=2) + "\n")


def build_tiny_minimax_h3(folder: Path) -> None:
    """Write a tiny MiniMax-H3 (t2va, fl2va and ref2va) into ``folder``."""
    import diffusers
    from diffusers import MiniMaxH3Scheduler

    folder = Path(folder)
    tokenizer = build_h3_tokenizer()
    models = {
        "text_encoder": _tiny_text_encoder(tokenizer, seed=0),
        "transformer": _tiny_transformer(seed=1),
        "transformer_ref": _tiny_transformer(seed=2),
        "vae": _tiny_video_vae(seed=3),
        "audio_vae": _tiny_audio_vae(seed=4),
        "scheduler": MiniMaxH3Scheduler(shift=12.0),
        "audio_scheduler": MiniMaxH3Scheduler(shift=3.0),
    }
    for name, model in models.items():
        kwargs = {"safe_serialization": True} if hasattr(model, "state_dict") else {}
        model.save_pretrained(folder / name, **kwargs)
    tokenizer.save_pretrained(folder / "tokenizer")
    save_qwen3vl_processor(qwen3vl_processor(tokenizer), folder / "processor")
    _write_indexes(folder, diffusers.__version__)
