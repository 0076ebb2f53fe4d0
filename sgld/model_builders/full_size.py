"""Full-size architectures of the released models, for ``random:<repo-id>`` model paths.

Each entry is the public repo's model_index.json with every weighted component's
config.json (values from the released configs), so a ``random:`` model has the real shapes,
layer counts and vocabulary sizes; only the weights are random. Speed does not depend on
weight values, which is what these models are for: benchmarks without downloads.
Tokenizers are sgld's offline tiny ones (their ids fit every real vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIFFUSERS_VERSION = "0.42.1"

# Text encoders.
UMT5_XXL = {  # google/umt5-xxl encoder (Wan)
    "model_type": "umt5", "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
    "num_decoder_layers": 24, "num_heads": 64, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "scalable_attention": True,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}
T5_V1_1_XXL = {  # google/t5-v1_1-xxl encoder (FLUX text_encoder_2)
    "model_type": "t5", "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
    "num_decoder_layers": 24, "num_heads": 64, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}
CLIP_L_TEXT = {  # openai/clip-vit-large-patch14 text tower (FLUX text_encoder)
    "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
QWEN3_4B = {  # Qwen/Qwen3-4B (Z-Image text_encoder)
    "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000, "attention_bias": False, "tie_word_embeddings": True,
    "hidden_act": "silu",
}
QWEN25_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct (Qwen-Image text_encoder)
    "model_type": "qwen2_5_vl",
    "text_config": {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
        "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu",
        "tokens_per_second": 2,
    },
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}
QWEN25_VL_7B_TEXT = {"model_type": "qwen2_5_vl_text", **QWEN25_VL_7B["text_config"]}  # its language model alone
BYT5_SMALL = {  # google/byt5-small encoder (HunyuanVideo-1.5's glyph encoder, Glyph-SDXL-v2 weights)
    "model_type": "t5", "vocab_size": 384, "d_model": 1472, "d_kv": 64, "d_ff": 3584, "num_layers": 12,
    "num_decoder_layers": 4, "num_heads": 6, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}
SIGLIP_SO400M = {  # google/siglip-so400m-patch14-384 vision tower (HunyuanVideo-1.5 I2V image_encoder)
    "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "image_size": 384, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
MISTRAL_SMALL_32 = {  # mistralai/Mistral-Small-3.2-24B-Instruct-2506 (FLUX.2 [dev] text_encoder)
    "model_type": "mistral3",
    "text_config": {
        "model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 32768,
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 1000000000.0, "hidden_act": "silu",
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11,
    },
    "vision_config": {
        "model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "head_dim": 64, "image_size": 1540, "patch_size": 14, "rope_theta": 10000.0,
    },
    "image_token_index": 10, "spatial_merge_size": 2, "multimodal_projector_bias": False,
    "projector_hidden_act": "gelu", "vision_feature_layer": -1, "tie_word_embeddings": False,
}

GEMMA3_12B = {  # google/gemma-3-12b-it (LTX-2's text encoder; the language model runs, its SigLIP tower loads)
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 3840, "intermediate_size": 15360,
        "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
        "query_pre_attn_scalar": 256, "max_position_embeddings": 131072, "sliding_window": 1024,
        "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
                      "vision_use_head": False},
    "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
}

# DiTs.
WAN_1_3B = {"patch_size": [1, 2, 2], "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
            "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
            "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
            "added_kv_proj_dim": None, "rope_max_seq_len": 1024}
WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
FLUX_DEV = {"patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
            "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
            "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56]}
QWEN_IMAGE = {"patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
              "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False,
              "axes_dims_rope": [16, 56, 56]}

Z_IMAGE_TURBO = {"all_patch_size": [2], "all_f_patch_size": [1], "in_channels": 16, "dim": 3840, "n_layers": 30,
                 "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-05, "qk_norm": True,
                 "cap_feat_dim": 2560, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [32, 48, 48],
                 "axes_lens": [1536, 512, 512]}

FLUX2_KLEIN_4B = {"patch_size": 1, "in_channels": 128, "out_channels": None, "num_layers": 5, "num_single_layers": 20,
                  "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 7680,
                  "timestep_guidance_channels": 256, "mlp_ratio": 3.0, "axes_dims_rope": [32, 32, 32, 32],
                  "rope_theta": 2000, "eps": 1e-06, "guidance_embeds": False}

# LTX-2.0 (Lightricks/LTX-2), as diffusers' scripts/convert_ltx2_to_diffusers.py writes it: a 48-block audio-video
# DiT (video 32 x 128 heads on 128 latent channels, audio 32 x 64 on 128 features), split RoPE, no perturbed
# attention (STG is a no-op there), and the 2-layer connectors with 128 registers.
LTX2_DIT = {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
            "attention_head_dim": 128, "cross_attention_dim": 4096, "vae_scale_factors": [8, 32, 32],
            "pos_embed_max_pos": 20, "base_height": 2048, "base_width": 2048, "audio_in_channels": 128,
            "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1, "audio_num_attention_heads": 32,
            "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "audio_scale_factor": 4,
            "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000, "audio_hop_length": 160, "num_layers": 48,
            "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
            "norm_eps": 1e-6, "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True,
            "rope_theta": 10000.0, "rope_double_precision": True, "causal_offset": 1,
            "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000, "rope_type": "split"}
LTX2_CONNECTORS = {"caption_channels": 3840, "text_proj_in_factor": 49, "video_connector_num_attention_heads": 30,
                   "video_connector_attention_head_dim": 128, "video_connector_num_layers": 2,
                   "video_connector_num_learnable_registers": 128, "audio_connector_num_attention_heads": 30,
                   "audio_connector_attention_head_dim": 128, "audio_connector_num_layers": 2,
                   "audio_connector_num_learnable_registers": 128, "connector_rope_base_seq_len": 4096,
                   "rope_theta": 10000.0, "rope_double_precision": True, "causal_temporal_positioning": False,
                   "rope_type": "split"}
LTX2_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [256, 512, 1024, 2048],
            "down_block_types": ["LTX2VideoDownBlock3D"] * 4, "decoder_block_out_channels": [256, 512, 1024],
            "layers_per_block": [4, 6, 6, 2, 2], "decoder_layers_per_block": [5, 5, 5, 5],
            "spatio_temporal_scaling": [True, True, True, True], "decoder_spatio_temporal_scaling": [True, True, True],
            "decoder_inject_noise": [False, False, False, False],
            "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
            "upsample_residual": [True, True, True], "upsample_factor": [2, 2, 2], "timestep_conditioning": False,
            "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "encoder_causal": True,
            "decoder_causal": False, "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "reflect",
            "spatial_compression_ratio": 32, "temporal_compression_ratio": 8}
LTX2_AUDIO_VAE = {"base_channels": 128, "output_channels": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2,
                  "attn_resolutions": None, "in_channels": 2, "resolution": 256, "latent_channels": 8,
                  "norm_type": "pixel", "causality_axis": "height", "dropout": 0.0, "mid_block_add_attention": False,
                  "sample_rate": 16000, "mel_hop_length": 160, "is_causal": True, "mel_bins": 64, "double_z": True}
LTX2_VOCODER = {"in_channels": 128, "hidden_channels": 1024, "out_channels": 2, "upsample_kernel_sizes": [16, 15, 8, 4, 4],
                "upsample_factors": [6, 5, 2, 2, 2], "resnet_kernel_sizes": [3, 7, 11],
                "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "leaky_relu_negative_slope": 0.1,
                "output_sampling_rate": 24000}
LTX2_UPSAMPLER = {"in_channels": 128, "mid_channels": 1024, "num_blocks_per_stage": 4, "dims": 3,
                  "spatial_upsample": True, "temporal_upsample": False, "rational_spatial_scale": 2.0}
LTX2_EULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.95,
              "max_shift": 2.05, "base_image_seq_len": 1024, "max_image_seq_len": 4096, "shift_terminal": 0.1}

# VAEs.
# MiniMax-H3 (MiniMaxAI/MiniMax-H3): the DiT (both partitions), video VAE and audio VAE configs of diffusers'
# scripts/convert_minimax_h3_to_diffusers.py are the classes' defaults (33.12 B, 2.60 B, 0.15 B). The conditioner is
# Qwen3-VL-32B (33.36 B with its vision tower), read at decoder layer 50.
MINIMAX_H3_DEFAULTS: dict = {}
# The released audio VAE config holds its 32 per-channel latent statistics, which both pipelines apply; the class's
# default is None (not appliable), so random weights take the identity ones.
MINIMAX_H3_AUDIO_VAE = {"latents_mean": [0.0] * 32, "latents_std": [1.0] * 32}
QWEN3_VL_32B = {
    "model_type": "qwen3_vl", "tie_word_embeddings": False, "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "text_config": {"vocab_size": 151936, "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True}},
    "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
                      "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
                      "deepstack_visual_indexes": [8, 16, 24], "out_hidden_size": 5120, "in_channels": 3},
}
# modular_model_index.json's pipeline config (the released canvas; the blocks class is added where it is written).
MINIMAX_H3_CANVAS = {"canvas_short_edge": 768, "canvas_max_pixels": 768 * 1344, "reference_image_short_edge": 2048}

WAN_VAE = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
           "temperal_downsample": [False, True, True], "dropout": 0.0,
           "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                            0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
           "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                           3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916]}
QWEN_VAE = WAN_VAE  # Qwen-Image's VAE has Wan2.1's architecture and latent statistics
FLUX_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 1024,
            "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False,
            "mid_block_add_attention": True, "force_upcast": True}

FLUX2_DEV = {**FLUX2_KLEIN_4B, "num_layers": 8, "num_single_layers": 48, "num_attention_heads": 48,
             "joint_attention_dim": 15360, "guidance_embeds": True}  # 32.2 B
FLUX2_VAE = {"latent_channels": 32, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
             "norm_num_groups": 32, "batch_norm_eps": 1e-4, "batch_norm_momentum": 0.1, "patch_size": [2, 2],
             "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True, "sample_size": 1024}
FLUX2_EULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "time_shift_type": "exponential",
               "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}

# Z-Image-Turbo's scheduler: a fixed shift, no resolution-dependent one.
Z_IMAGE_EULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}

# HunyuanVideo-1.5 480p (8.3 B DiT, 54 double-stream blocks; its VAE compresses 16x spatially, 4x in time).
HUNYUAN15_480P = {"in_channels": 65, "out_channels": 32, "num_attention_heads": 16, "attention_head_dim": 128,
                  "num_layers": 54, "num_refiner_layers": 2, "mlp_ratio": 4.0, "patch_size": 1, "patch_size_t": 1,
                  "text_embed_dim": 3584, "text_embed_2_dim": 1472, "image_embed_dim": 1152,
                  "rope_axes_dim": [16, 56, 56], "target_size": 640, "use_meanflow": False}
HUNYUAN15_VAE = {"latent_channels": 32, "block_out_channels": [128, 256, 512, 1024, 1024], "layers_per_block": 2,
                 "spatial_compression_ratio": 16, "temporal_compression_ratio": 4, "scaling_factor": 1.03682}
HUNYUAN15_EULER = {"num_train_timesteps": 1000, "shift": 5.0, "use_dynamic_shifting": False}

# Schedulers.
WAN_UNIPC = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
             "solver_order": 2, "prediction_type": "flow_prediction", "predict_x0": True, "solver_type": "bh2",
             "lower_order_final": True, "use_flow_sigmas": True, "flow_shift": 3.0, "final_sigmas_type": "zero",
             "timestep_spacing": "linspace", "steps_offset": 0}
FLUX_EULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
              "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
QWEN_EULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.5,
              "max_shift": 0.9, "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02,
              "time_shift_type": "exponential"}


@dataclass(frozen=True)
class Component:
    """One entry of model_index.json: its library and class, and its config (None for tokenizers)."""

    library: str
    class_name: str
    config: dict | None = None
    # For tokenizers and processors: which offline builder makes it ("t5", "clip", "qwen2", "qwen3": qwen2 with
    # Qwen3's chat template, "qwen25vl": HunyuanVideo-1.5's, "byt5", "siglip": SigLIP's 384² image processor,
    # "mistral": the Pixtral processor folder of FLUX.2 [dev], "qwen2vl": Qwen-Image-Edit's processor folder,
    # "gemma3": LTX-2's Gemma tokenizer, "h3": MiniMax-H3's Qwen2-style tokenizer, "qwen3vl": its processor folder).
    tokenizer: str | None = None


@dataclass(frozen=True)
class FullSizeModel:
    """A released model's pipeline class, components and extra model_index.json entries."""

    pipeline: str
    components: dict[str, Component]
    extra: dict[str, Any] = field(default_factory=dict)
    # Weighted parts outside model_index.json that the model's recipe loads by subfolder (LTX-2's latent upsampler).
    extra_configs: dict[str, Component] = field(default_factory=dict)
    # LoRA files at the folder's root the recipe loads (LTX-2's stage-2 LoRA): name -> its rank and target layers.
    # A random folder holds a "<name>.random.json" stand-in; the file is written, random, on first load.
    loras: dict[str, dict] = field(default_factory=dict)
    # A modular pipeline's config (MiniMax-H3's canvas), written as modular_model_index.json beside model_index.json.
    modular: dict[str, Any] = field(default_factory=dict)

    def model_index(self) -> dict[str, Any]:
        """The model_index.json of the model (null entries for absent optional components)."""
        index: dict[str, Any] = {"_class_name": self.pipeline, "_diffusers_version": DIFFUSERS_VERSION}
        for name, comp in self.components.items():
            index[name] = [comp.library, comp.class_name]
        index.update(self.extra)
        return index


def _wan(transformer: dict, two_experts: bool = False) -> FullSizeModel:
    components = {
        "scheduler": Component("diffusers", "UniPCMultistepScheduler", WAN_UNIPC),
        "text_encoder": Component("transformers", "UMT5EncoderModel", UMT5_XXL),
        "tokenizer": Component("transformers", "T5TokenizerFast", tokenizer="t5"),
        "transformer": Component("diffusers", "WanTransformer3DModel", transformer),
        "vae": Component("diffusers", "AutoencoderKLWan", WAN_VAE),
    }
    extra: dict[str, Any] = {"transformer_2": [None, None], "boundary_ratio": None, "expand_timesteps": False}
    if two_experts:
        components["transformer_2"] = Component("diffusers", "WanTransformer3DModel", transformer)
        extra = {"boundary_ratio": 0.875, "expand_timesteps": False}
    return FullSizeModel("WanPipeline", components, extra)


def _hunyuan15(image_to_video: bool) -> FullSizeModel:
    components = {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", HUNYUAN15_EULER),
        "guider": Component("diffusers", "ClassifierFreeGuidance", {"guidance_scale": 6.0}),
        "text_encoder": Component("transformers", "Qwen2_5_VLTextModel", QWEN25_VL_7B_TEXT),
        "tokenizer": Component("transformers", "Qwen2Tokenizer", tokenizer="qwen25vl"),
        "text_encoder_2": Component("transformers", "T5EncoderModel", BYT5_SMALL),
        "tokenizer_2": Component("transformers", "ByT5Tokenizer", tokenizer="byt5"),
        "transformer": Component("diffusers", "HunyuanVideo15Transformer3DModel",
                                 {**HUNYUAN15_480P, "task_type": "i2v" if image_to_video else "t2v"}),
        "vae": Component("diffusers", "AutoencoderKLHunyuanVideo15", HUNYUAN15_VAE),
    }
    if not image_to_video:
        return FullSizeModel("HunyuanVideo15Pipeline", components)
    components["image_encoder"] = Component("transformers", "SiglipVisionModel", SIGLIP_SO400M)
    components["feature_extractor"] = Component("transformers", "SiglipImageProcessor", tokenizer="siglip")
    return FullSizeModel("HunyuanVideo15ImageToVideoPipeline", components)


def _qwen_image(pipeline: str) -> FullSizeModel:
    """Qwen-Image and its edit models: one layout; the edit models add the Qwen2-VL processor."""
    components = {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", QWEN_EULER),
        "text_encoder": Component("transformers", "Qwen2_5_VLForConditionalGeneration", QWEN25_VL_7B),
        "tokenizer": Component("transformers", "Qwen2Tokenizer", tokenizer="qwen2"),
        "transformer": Component("diffusers", "QwenImageTransformer2DModel", QWEN_IMAGE),
        "vae": Component("diffusers", "AutoencoderKLQwenImage", QWEN_VAE),
    }
    if pipeline != "QwenImagePipeline":
        components["processor"] = Component("transformers", "Qwen2VLProcessor", tokenizer="qwen2vl")
    return FullSizeModel(pipeline, components)


FULL_SIZE_MODELS: dict[str, FullSizeModel] = {
    "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v": _hunyuan15(image_to_video=False),
    "hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v": _hunyuan15(image_to_video=True),
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": _wan(WAN_1_3B),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": _wan(WAN_14B),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": _wan(WAN_14B, two_experts=True),
    "black-forest-labs/FLUX.1-dev": FullSizeModel("FluxPipeline", {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", FLUX_EULER),
        "text_encoder": Component("transformers", "CLIPTextModel", CLIP_L_TEXT),
        "text_encoder_2": Component("transformers", "T5EncoderModel", T5_V1_1_XXL),
        "tokenizer": Component("transformers", "CLIPTokenizer", tokenizer="clip"),
        "tokenizer_2": Component("transformers", "T5TokenizerFast", tokenizer="t5"),
        "transformer": Component("diffusers", "FluxTransformer2DModel", FLUX_DEV),
        "vae": Component("diffusers", "AutoencoderKL", FLUX_VAE),
    }, {"feature_extractor": [None, None], "image_encoder": [None, None]}),
    "black-forest-labs/FLUX.2-klein-4B": FullSizeModel("Flux2KleinPipeline", {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", FLUX2_EULER),
        "text_encoder": Component("transformers", "Qwen3ForCausalLM", QWEN3_4B),
        "tokenizer": Component("transformers", "Qwen2TokenizerFast", tokenizer="qwen3"),
        "transformer": Component("diffusers", "Flux2Transformer2DModel", FLUX2_KLEIN_4B),
        "vae": Component("diffusers", "AutoencoderKLFlux2", FLUX2_VAE),
    }, {"is_distilled": True}),
    "black-forest-labs/FLUX.2-dev": FullSizeModel("Flux2Pipeline", {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", FLUX2_EULER),
        "text_encoder": Component("transformers", "Mistral3ForConditionalGeneration", MISTRAL_SMALL_32),
        "tokenizer": Component("transformers", "PixtralProcessor", tokenizer="mistral"),
        "transformer": Component("diffusers", "Flux2Transformer2DModel", FLUX2_DEV),
        "vae": Component("diffusers", "AutoencoderKLFlux2", FLUX2_VAE),
    }),
    "Tongyi-MAI/Z-Image-Turbo": FullSizeModel("ZImagePipeline", {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", Z_IMAGE_EULER),
        "text_encoder": Component("transformers", "Qwen3Model", QWEN3_4B),
        "tokenizer": Component("transformers", "Qwen2Tokenizer", tokenizer="qwen3"),
        "transformer": Component("diffusers", "ZImageTransformer2DModel", Z_IMAGE_TURBO),
        "vae": Component("diffusers", "AutoencoderKL", FLUX_VAE),
    }),
    "Lightricks/LTX-2": FullSizeModel("LTX2Pipeline", {
        "scheduler": Component("diffusers", "FlowMatchEulerDiscreteScheduler", LTX2_EULER),
        "text_encoder": Component("transformers", "Gemma3ForConditionalGeneration", GEMMA3_12B),
        "tokenizer": Component("transformers", "GemmaTokenizer", tokenizer="gemma3"),
        "connectors": Component("ltx2", "LTX2TextConnectors", LTX2_CONNECTORS),
        "transformer": Component("diffusers", "LTX2VideoTransformer3DModel", LTX2_DIT),
        "vae": Component("diffusers", "AutoencoderKLLTX2Video", LTX2_VAE),
        "audio_vae": Component("diffusers", "AutoencoderKLLTX2Audio", LTX2_AUDIO_VAE),
        "vocoder": Component("ltx2", "LTX2Vocoder", LTX2_VOCODER),
    }, {"processor": [None, None], "prompt_enhancer": [None, None], "duration_head": [None, None]},
        extra_configs={"latent_upsampler": Component("ltx2", "LTX2LatentUpsamplerModel", LTX2_UPSAMPLER)},
        loras={"ltx-2-19b-distilled-lora-384.safetensors": {"rank": 384,
                                                            "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}}),
    "MiniMaxAI/MiniMax-H3": FullSizeModel("MiniMaxH3Pipeline", {
        "text_encoder": Component("transformers", "Qwen3VLForConditionalGeneration", QWEN3_VL_32B),
        "tokenizer": Component("transformers", "Qwen2TokenizerFast", tokenizer="h3"),
        "processor": Component("transformers", "Qwen3VLProcessor", tokenizer="qwen3vl"),
        "vae": Component("diffusers", "AutoencoderKLMiniMaxH3", MINIMAX_H3_DEFAULTS),
        "audio_vae": Component("diffusers", "AutoencoderKLMiniMaxH3Audio", MINIMAX_H3_AUDIO_VAE),
        "transformer": Component("diffusers", "MiniMaxH3Transformer3DModel", MINIMAX_H3_DEFAULTS),
        "transformer_ref": Component("diffusers", "MiniMaxH3Transformer3DModel", MINIMAX_H3_DEFAULTS),
        "scheduler": Component("diffusers", "MiniMaxH3Scheduler", {"shift": 12.0}),
        "audio_scheduler": Component("diffusers", "MiniMaxH3Scheduler", {"shift": 3.0}),
    }, modular={"_blocks_class_name": "MiniMaxH3Blocks", **MINIMAX_H3_CANVAS}),
    "Qwen/Qwen-Image": _qwen_image("QwenImagePipeline"),
    "Qwen/Qwen-Image-Edit": _qwen_image("QwenImageEditPipeline"),
    "Qwen/Qwen-Image-Edit-2509": _qwen_image("QwenImageEditPlusPipeline"),
}

RANDOM_PREFIX = "random:"
