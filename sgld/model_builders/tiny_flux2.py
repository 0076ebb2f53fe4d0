"""Tiny random-weight FLUX.2 [klein] (Qwen3 text encoder, FLUX.2 DiT and VAE), built offline.

The text encoder is a real ``Qwen3ForCausalLM`` with 28 small layers (the pipeline stacks the
hidden states of layers 9, 18 and 27); the tokenizer is the offline Qwen2 BPE with Qwen3's chat
template (``tiny_z_image``). The VAE's batch-norm statistics are set away from 0/1 so the latent
normalisation is exercised. ``is_distilled=False``: the base model, whose guidance is CFG.
"""

from __future__ import annotations

import json
from pathlib import Path

from sgld.model_builders.tiny_parts import scale_parameters_


def _tiny_flux2_parts(dit_seed: int, vae_seed: int, guidance_embeds: bool):
    """The tiny FLUX.2 DiT (distilled guidance input or not), VAE (batch-norm statistics away from 0/1) and scheduler."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    torch.manual_seed(dit_seed)
    latent_channels = 4
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )
    # Make the prompt matter: a strong text embedding, and text values that carry into the image tokens.
    scale_parameters_([transformer.context_embedder], 8.0)
    scale_parameters_([block.attn.add_v_proj for block in transformer.transformer_blocks], 8.0)
    scale_parameters_([block.attn.to_out[0] for block in transformer.transformer_blocks], 3.0)
    if guidance_embeds:  # and the guidance scale
        scale_parameters_([transformer.time_guidance_embed], 4.0)
    torch.manual_seed(vae_seed)
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
    return transformer, vae, scheduler


def build_tiny_flux2_klein(folder: Path) -> None:
    """Write a tiny FLUX.2 [klein] base (text-to-image with CFG) model into ``folder``."""
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sgld.model_builders.tiny_z_image import build_qwen3_tokenizer

    tokenizer = build_qwen3_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )).eval()
    transformer, vae, scheduler = _tiny_flux2_parts(dit_seed=1, vae_seed=2, guidance_embeds=False)
    Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                       transformer=transformer, is_distilled=False).save_pretrained(folder, safe_serialization=True)


MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                    "[IMG_BREAK]", "[IMG_END]", "<pad>"]
# What Mistral Small 3.x's chat template renders for system and user turns of text (content as a list of parts).
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]{% endif %}{% endfor %}"
)


def build_mistral_tokenizer():
    """Mistral Small 3.x's tokenizer layout (byte-level BPE, trained here on FLUX.2's system message) with its
    chat template; the text half of the Pixtral processor FLUX.2 [dev] ships."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sgld.model_builders.tiny_parts import WORDS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([SYSTEM_MESSAGE, " ".join(WORDS)], trainers.BpeTrainer(
        vocab_size=4096, special_tokens=MISTRAL_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", model_max_length=131072)
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def save_pixtral_processor(tokenizer, folder: Path) -> None:
    """Write ``tokenizer`` as the Pixtral processor folder FLUX.2 [dev] ships (tokenizer, chat template, image
    processor and processor configs): written by hand, since transformers builds the processor only with torchvision."""
    from transformers import PixtralImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    PixtralImageProcessorPil(size={"longest_edge": 64}, patch_size=8).save_pretrained(folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(image_processor_type="PixtralImageProcessor", processor_class="PixtralProcessor")
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "processor_config.json").write_text(json.dumps(
        {"processor_class": "PixtralProcessor", "patch_size": 8, "spatial_merge_size": 2, "image_token": "[IMG]",
         "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}, indent=2, sort_keys=True) + "\n")


def build_tiny_flux2_dev(folder: Path) -> None:
    """Write a tiny FLUX.2 [dev] (Mistral3 text encoder, guidance-distilled DiT) model into ``folder``."""
    import torch
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = build_mistral_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(10)
    # 30 small layers: the pipeline stacks the hidden states of layers 10, 20 and 30.
    text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tokenizer), hidden_size=16,
                         intermediate_size=32, num_hidden_layers=30, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=8, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=ids("<s>"),
                         eos_token_id=ids("</s>"), pad_token_id=ids("<pad>")),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, image_size=64, patch_size=8),
        image_token_index=ids("[IMG]"), spatial_merge_size=2, multimodal_projector_bias=False,
    )).eval()
    transformer, vae, scheduler = _tiny_flux2_parts(dit_seed=11, vae_seed=12, guidance_embeds=True)
    Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=None,
                  transformer=transformer).save_pretrained(folder, safe_serialization=True)
    save_pixtral_processor(tokenizer, folder / "tokenizer")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "PixtralProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
