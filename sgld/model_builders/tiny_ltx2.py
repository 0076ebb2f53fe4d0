"""Tiny random-weight LTX-2 (video with sound: Gemma 3, text connectors, audio-video DiT, two VAEs, vocoder), offline.

The folder has ``Lightricks/LTX-2``'s layout: the ``LTX2Pipeline`` components (``LTX2ImageToVideoPipeline``
takes the same ones), plus, outside ``model_index.json``, the two-stage recipe's ``latent_upsampler/`` and the
stage-2 distilled LoRA file, which the reference loads by subfolder and weight name. The sizes keep the released
constraints: the video VAE compresses 32x in space and 8x in time (height/width multiples of 32, 8k+1 frames),
the audio VAE and vocoder turn 25 audio latents a second into stereo 24 kHz. The tokenizer is a Gemma-style BPE
(byte fallback, ``<bos>`` added, left padding) trained here on the shared word list.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from sgld.model_builders.tiny_parts import WORDS, scale_parameters_

# Gemma 3's first ids, in its order; the image and turn markers follow the byte tokens.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
GEMMA_MARKERS = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
# The stage-2 LoRA's file name in Lightricks/LTX-2 (loaded with ``load_lora_weights(folder, weight_name=...)``).
DISTILLED_LORA = "ltx-2-19b-distilled-lora-384.safetensors"
UPSAMPLER_SUBFOLDER = "latent_upsampler"
LATENT_CHANNELS = 8
MEL_BINS = 16
AUDIO_LATENT_CHANNELS = 4  # x MEL_BINS / 4 latent mel bins = the 16 features of one audio token


def build_gemma3_tokenizer():
    """A Gemma-style ``GemmaTokenizer``: byte-fallback BPE trained on the word list, ``<bos>`` first, no downloads."""
    from tokenizers import Tokenizer, models, normalizers, trainers
    from transformers import GemmaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Replace(" ", "\u2581")  # Gemma marks spaces with ▁ and adds no prefix space
    trainer = trainers.BpeTrainer(vocab_size=4096, initial_alphabet=list(string.printable.strip()) + ["\u2581"],
                                  show_progress=False)
    bpe.train_from_iterator([w for word in WORDS for w in (word, "\u2581" + word)], trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = {token: i for i, token in enumerate(GEMMA_SPECIALS)}
    vocab.update({f"<0x{byte:02X}>": len(vocab) + byte for byte in range(256)})  # the byte fallback
    for token in GEMMA_MARKERS:
        vocab[token] = len(vocab)
    for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.add_special_tokens({"additional_special_tokens": GEMMA_MARKERS})
    return tokenizer


def _tiny_gemma3(tokenizer, seed: int):
    """A 2-layer ``Gemma3ForConditionalGeneration`` (the class LTX-2 ships) with a 1-layer SigLIP tower."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(seed)
    return Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
                         sliding_window=512, pad_token_id=ids("<pad>"), eos_token_id=ids("<eos>"),
                         bos_token_id=ids("<bos>")),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )).eval()


def _tiny_connectors(caption_channels: int, text_layers: int, seed: int):
    """LTX-2.0's connectors: one projection of all stacked Gemma layers, a 1-layer transformer per stream with
    128 learnable registers (the padding of a 1024-token prompt becomes registers)."""
    import torch
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    torch.manual_seed(seed)
    heads, head_dim = 4, caption_channels // 4  # LTX-2.0 keeps the connector width at the caption width
    connectors = LTX2TextConnectors(
        caption_channels=caption_channels, text_proj_in_factor=text_layers + 1,
        video_connector_num_attention_heads=heads, video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=1, audio_connector_num_attention_heads=heads,
        audio_connector_attention_head_dim=head_dim, audio_connector_num_layers=1, rope_type="split",
    )
    # Make the prompt matter. A 1024-token prompt is mostly padding, which the connectors replace with registers;
    # random registers would drown the few prompt tokens in the DiT's cross-attention. Zero registers with
    # bias-free attention values and outputs carry only what they attend to, the prompt (the final RMS norm
    # restores their scale), so every text token the DiT sees depends on the prompt.
    import torch

    with torch.no_grad():
        for connector in (connectors.video_connector, connectors.audio_connector):
            connector.learnable_registers.zero_()
            for block in connector.transformer_blocks:
                block.attn1.to_v.bias.zero_()
                block.attn1.to_out[0].bias.zero_()
    return connectors


def _tiny_transformer(caption_channels: int, seed: int):
    """A 2-block audio-video DiT: video 2x8 heads on 8 latent channels, audio 2x4 heads on 16 features."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(seed)
    model = LTX2VideoTransformer3DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        audio_out_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, caption_channels=caption_channels,
        rope_type="split",
    )
    # Make the prompt matter in both streams: stronger caption projections.
    scale_parameters_([model.caption_projection, model.audio_caption_projection], 2.0)
    scale_parameters_([model.proj_out, model.audio_proj_out], 3.0)
    return model


def _tiny_video_vae(seed: int):
    """LTX-2's video VAE layout (patch 4, spatial/temporal/2x spatiotemporal downsampling: 32x, 8x) at tiny width."""
    import torch
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(seed)
    vae = AutoencoderKLLTX2Video(
        latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False,
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    # Latent statistics away from 0/1 so the pipeline's normalisation is exercised, and a wider pixel range.
    with torch.no_grad():
        vae.latents_mean.uniform_(-0.2, 0.2)
        vae.latents_std.uniform_(0.7, 1.3)
    scale_parameters_([vae.decoder.conv_out], 2.5)
    return vae


def _tiny_audio_vae(seed: int):
    """LTX-2's audio VAE (causal in time, pixel norm, 4x down in time and mel) on 16 mel bins, 4 latent channels."""
    import torch
    from diffusers import AutoencoderKLLTX2Audio

    torch.manual_seed(seed)
    # The pipeline normalises packed audio tokens (channels x latent mel bins) with ``latents_mean`` of size
    # ``base_channels``: they must be equal, as 8 x 16 = 128 are in the released model.
    return AutoencoderKLLTX2Audio(base_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4, ch_mult=(1, 2, 4),
                                  num_res_blocks=1, latent_channels=AUDIO_LATENT_CHANNELS, mel_bins=MEL_BINS)


def _tiny_vocoder(seed: int):
    """LTX-2's vocoder (x240 upsampling of 100 mel frames a second: 24 kHz stereo) at 32 hidden channels."""
    import torch
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(seed)
    vocoder = LTX2Vocoder(in_channels=2 * MEL_BINS, hidden_channels=32, out_channels=2, output_sampling_rate=24000)
    # Each transposed convolution halves the channels and spreads its input over ``stride`` samples, so at default
    # init the signal fades layer by layer and the output is the biases. Keep its scale so the mel shows through.
    with torch.no_grad():
        for layer, stride in zip(vocoder.upsamplers, vocoder.config.upsample_factors):
            layer.weight.mul_(2.0 * stride**0.5)
        vocoder.conv_out.bias.zero_()
    return vocoder


def _tiny_latent_upsampler(seed: int):
    """The x2 spatial latent upsampler (rational resampler, as the class defaults) at 32 mid channels."""
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    torch.manual_seed(seed)
    return LTX2LatentUpsamplerModel(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1)


def _scheduler():
    """LTX's flow-match Euler config: resolution shift from 0.95 (1024 tokens) to 2.05 (4096), terminal 0.1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
        base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1,
    )


def _save_distilled_lora(transformer, folder: Path, seed: int) -> None:
    """A seeded rank-4 LoRA on the DiT's attention projections, saved as the stage-2 distilled LoRA file."""
    import torch
    from diffusers import LTX2Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False), adapter_name="stage_2_distilled")
    state = get_peft_model_state_dict(transformer, adapter_name="stage_2_distilled")
    LTX2Pipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=DISTILLED_LORA)
    transformer.delete_adapters("stage_2_distilled")


def build_tiny_ltx2(folder: Path) -> None:
    """Write a tiny LTX-2 (text/image to video with sound) into ``folder``, with its upsampler and stage-2 LoRA."""
    from diffusers import LTX2Pipeline

    tokenizer = build_gemma3_tokenizer()
    text_encoder = _tiny_gemma3(tokenizer, seed=0)
    text = text_encoder.config.text_config
    transformer = _tiny_transformer(text.hidden_size, seed=1)
    pipe = LTX2Pipeline(
        scheduler=_scheduler(), vae=_tiny_video_vae(seed=2), audio_vae=_tiny_audio_vae(seed=3),
        text_encoder=text_encoder, tokenizer=tokenizer,
        connectors=_tiny_connectors(text.hidden_size, text.num_hidden_layers, seed=4), transformer=transformer,
        vocoder=_tiny_vocoder(seed=5),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    _tiny_latent_upsampler(seed=6).save_pretrained(folder / UPSAMPLER_SUBFOLDER, safe_serialization=True)
    _save_distilled_lora(transformer, folder, seed=7)


def build_tiny_ltx2_upsampler(folder: Path) -> None:
    """Write the tiny LTX-2 latent upsampler as its own ``LTX2LatentUpsamplePipeline`` folder (VAE + upsampler).

    The VAE and upsampler equal those of ``build_tiny_ltx2`` (same seeds), as the released upsampler folders
    reuse their model's VAE.
    """
    from diffusers import LTX2LatentUpsamplePipeline

    pipe = LTX2LatentUpsamplePipeline(vae=_tiny_video_vae(seed=2), latent_upsampler=_tiny_latent_upsampler(seed=6))
    pipe.save_pretrained(folder, safe_serialization=True)
