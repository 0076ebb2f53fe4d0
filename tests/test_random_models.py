"""``random:<repo-id>``: the released architectures with random weights (for GPU benchmarks without downloads)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from sgld.errors import UserError
from sgld.model_builders.full_size import FULL_SIZE_MODELS

# Parameter counts of the released components (billions), as their model cards and configs give them.
RELEASED_SIZES = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": {"transformer": 1.419, "text_encoder": 5.681, "vae": 0.127},
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": {"transformer": 14.288, "text_encoder": 5.681, "vae": 0.127},
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": {"transformer": 14.288, "transformer_2": 14.288, "text_encoder": 5.681},
    "black-forest-labs/FLUX.1-dev": {"transformer": 11.901, "text_encoder": 0.123, "text_encoder_2": 4.762, "vae": 0.0838},
    "Qwen/Qwen-Image": {"transformer": 20.430, "text_encoder": 8.292, "vae": 0.127},
    # Z-Image-Turbo's DiT: 6,154,908,736 parameters; Qwen3-4B (embeddings tied): 4.02 B.
    "Tongyi-MAI/Z-Image-Turbo": {"transformer": 6.155, "text_encoder": 4.022, "vae": 0.0838},
    # HunyuanVideo-1.5: an 8.3 B DiT; Qwen2.5-VL-7B's language model; ByT5-small's encoder; SigLIP so400m.
    "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v": {"transformer": 8.327, "text_encoder": 7.071,
                                                         "text_encoder_2": 0.2177},
    "hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v": {"transformer": 8.327, "image_encoder": 0.4282},
    # FLUX.2 [dev]: a 32.2 B DiT; Mistral Small 3.2 24B (with its Pixtral vision tower).
    "black-forest-labs/FLUX.2-dev": {"transformer": 32.223, "text_encoder": 24.011},
    "Qwen/Qwen-Image-Edit-2509": {"transformer": 20.430, "text_encoder": 8.292, "vae": 0.127},
    # LTX-2 ("ltx-2-19b"): an 18.88 B audio-video DiT, Gemma 3 12B (12.19 B with its SigLIP tower). The connectors,
    # VAEs and vocoder are counted from diffusers' conversion script's configs (no published figures to hold them to).
    # MiniMax-H3: a 33.12 B DiT per partition, Qwen3-VL-32B 33.36 B (the docs' 61.7 GB and 62.1 GB in bf16), the
    # video VAE 2.60 B (its ViT decoder 2.42 B), the audio VAE 0.151 B.
    "MiniMaxAI/MiniMax-H3": {"transformer": 33.123, "transformer_ref": 33.123, "text_encoder": 33.357, "vae": 2.604,
                             "audio_vae": 0.1513},
    "Lightricks/LTX-2": {"transformer": 18.876, "text_encoder": 12.187, "connectors": 1.431, "vae": 1.222,
                         "audio_vae": 0.0532, "vocoder": 0.0556},
}


def _meta_module(folder, name, comp):
    from transformers import AutoConfig

    from sgld.model_builders.random_weights import LIBRARIES

    cls = getattr(importlib.import_module(LIBRARIES[comp.library]), comp.class_name)
    with torch.device("meta"):
        if comp.library != "transformers":
            return cls.from_config(cls.load_config(folder / name))
        return cls._from_config(AutoConfig.from_pretrained(folder / name))


@pytest.mark.parametrize("repo", sorted(RELEASED_SIZES))
def test_folders_have_the_released_architecture(sgld_home, repo):
    from sgld.model_builders.random_weights import is_random_folder, materialize_random
    from sgld.models.registry import read_model_index

    folder = materialize_random(f"random:{repo}")
    assert is_random_folder(folder) and not list(folder.rglob("*.safetensors"))
    index = read_model_index(folder)
    for name, billions in RELEASED_SIZES[repo].items():
        comp = FULL_SIZE_MODELS[repo].components[name]
        assert index[name] == [comp.library, comp.class_name]
        count = sum(p.numel() for p in _meta_module(folder, name, comp).parameters()) / 1e9
        assert count == pytest.approx(billions, rel=2e-3), (name, count)


def test_minimax_h3_vaes_carry_the_latent_statistics_its_pipelines_apply(sgld_home):
    from sgld.model_builders.random_weights import materialize_random

    folder = materialize_random("random:MiniMaxAI/MiniMax-H3")
    for name, channels in (("vae", None), ("audio_vae", 32)):
        config = json.loads((folder / name / "config.json").read_text())
        mean, std = config["latents_mean"], config["latents_std"]
        assert mean is not None and std is not None and len(mean) == len(std) > 0, name
        assert channels is None or len(mean) == channels == config["latent_channels"]


def test_random_paths_compose_with_the_model_file(sgld_home):
    from sgld.run_config import run_config_from_options
    from sgld.runner import check_before_loading

    run = run_config_from_options({"model_path": "random:Wan-AI/Wan2.1-T2V-14B-Diffusers", "prompt": "x"})
    assert run.model.name == "wan21_14b" and run.model.path == "random:Wan-AI/Wan2.1-T2V-14B-Diffusers"
    assert (run.sampling.height, run.sampling.width, run.sampling.num_inference_steps) == (720, 1280, 50)
    check_before_loading(run)  # the pre-load checks read the written configs
    with pytest.raises(UserError) as info:
        run_config_from_options({"model_path": "random:acme/nothing", "prompt": "x"})
    assert "random:Qwen/Qwen-Image" in str(info.value)


def test_weights_are_made_on_the_device_seeded_and_cast(sgld_home):
    from diffusers import AutoencoderKL

    from sgld.model_builders.random_weights import build_random_module, materialize_random

    sub = materialize_random("random:black-forest-labs/FLUX.1-dev") / "vae"
    make = lambda seed: build_random_module("diffusers", AutoencoderKL, sub, torch.bfloat16, torch.device("cpu"), seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    wa, wb, wc = (m.decoder.conv_in.weight for m in (a, b, c))
    assert wa.dtype == torch.bfloat16 and wa.device.type == "cpu" and not wa.requires_grad
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert wa.float().std() > 0
    # Where an fp32 copy does not fit (an OOM on the GPU), the same module is made in bf16 directly: seeded too.
    direct = [build_random_module("diffusers", AutoencoderKL, sub, torch.bfloat16, torch.device("cpu"), 0,
                                  fp32_first=False) for _ in range(2)]
    wd = [m.decoder.conv_in.weight for m in direct]
    assert wd[0].dtype == torch.bfloat16 and torch.equal(wd[0], wd[1]) and wd[0].float().std() > 0
    assert torch.get_default_dtype() == torch.float32  # restored


def test_ltx2_two_stage_parts_are_there_and_its_lora_is_written_on_first_use(sgld_home):
    """The random LTX-2 folder has its latent upsampler's config (the released x2 one) and the stage-2 LoRA's
    stand-in, which becomes a LoRA file of its rank on the DiT's attention projections when first loaded."""
    from sgld.families import FAMILIES
    from sgld.model_builders.full_size import LTX2_UPSAMPLER
    from sgld.model_builders.random_weights import materialize_random, random_lora_file

    folder = materialize_random("random:Lightricks/LTX-2")
    assert FAMILIES["ltx2"].two_stage_missing(folder) == ()
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    config = LTX2LatentUpsamplerModel.load_config(folder / "latent_upsampler")
    assert {k: config[k] for k in LTX2_UPSAMPLER} == LTX2_UPSAMPLER
    (stand_in,) = folder.glob("*distilled-lora*.safetensors.random.json")
    block = torch.nn.Module()  # a stand-in DiT of one attention: the file's keys and shapes follow the module
    block.attn1 = torch.nn.Module()
    block.attn1.to_q, block.attn1.to_out = torch.nn.Linear(16, 8), torch.nn.ModuleList([torch.nn.Linear(8, 16)])
    block.proj_out = torch.nn.Linear(8, 8)
    small = sgld_home / "lora-check" / stand_in.name
    small.parent.mkdir(exist_ok=True)
    small.write_text(stand_in.read_text())
    path = random_lora_file(small, block, torch.float32, torch.device("cpu"))
    from safetensors.torch import load_file

    state = load_file(path)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "transformer.attn1.to_q.lora_A.weight": (384, 16), "transformer.attn1.to_q.lora_B.weight": (8, 384),
        "transformer.attn1.to_out.0.lora_A.weight": (384, 8), "transformer.attn1.to_out.0.lora_B.weight": (16, 384)}
    assert random_lora_file(small, block, torch.float32, torch.device("cpu")) == path  # written once
