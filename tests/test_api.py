"""The Python API (DiffGenerator) and the engine options it honours."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from sgld import DiffGenerator, UserError

SMALL = dict(height=64, width=64, num_frames=9, num_inference_steps=2)


def test_generate_returns_frames_and_path(tiny_wan_generator, tmp_path):
    res = tiny_wan_generator.generate("a red fox", seed=3, return_frames=True, save_output=True, output_path=str(tmp_path), **SMALL)
    assert res.frames.shape == (9, 64, 64, 3) and res.frames.dtype == np.uint8
    assert res.path == tmp_path / "a_red_fox_seed3.mp4" and res.path.is_file()
    assert set(res.timings) == {"validate", "encode_prompt", "timesteps", "prepare_latents", "denoise", "decode"}
    again = tiny_wan_generator.generate("a red fox", seed=3, save_output=True, output_path=str(tmp_path), **SMALL)
    assert again.path == tmp_path / "a_red_fox_seed3_1.mp4"  # nothing overwritten
    assert again.frames is None  # frames only when asked for


def test_no_save_means_no_file(tiny_wan_generator, tmp_path):
    res = tiny_wan_generator.generate("a cat", save_output=False, output_path=str(tmp_path), **SMALL)
    assert res.path is None and not any(tmp_path.iterdir())


def test_step_callback_sees_every_step(tiny_wan_generator):
    seen = []
    tiny_wan_generator.generate("a cat", save_output=False, step_callback=lambda d, t: seen.append((d, t)), **SMALL)
    assert seen == [(0, 2), (1, 2), (2, 2)]  # 0: the loop starts


def test_no_guidance_runs_one_branch(tiny_wan_generator):
    res = tiny_wan_generator.generate("a cat", guidance_scale=1.0, save_output=False, return_frames=True, **SMALL)
    assert res.frames.shape == (9, 64, 64, 3)


@pytest.mark.parametrize(
    "settings,param,match",
    [
        (dict(height=65), "height", "nearest valid: 64 or 80"),
        (dict(width=8), "width", "multiple of 16"),
        (dict(num_frames=10), "num_frames", "nearest valid: 9 or 13"),
        (dict(num_inference_steps=0), "sampling.num_inference_steps", ">= 1"),
        (dict(prompt="   "), "prompt", "non-empty"),
        (dict(guidance_scale=-1.0), "sampling.guidance_scale", ">= 0"),
        (dict(guidance_scale=float("nan")), "sampling.guidance_scale", "guidance_scale=nan is not a finite number"),
        (dict(flow_shift=float("inf")), "sampling.flow_shift", "flow_shift=inf is not a finite number"),
        (dict(output_file_name="../../etc/passwd"), "output_file_name", "plain file name"),
        (dict(output_file_name="x.png"), "output_file_name", "saved as .mp4"),
        (dict(num_gpus=2), "num_gpus", "unknown option"),
    ],
)
def test_bad_requests_fail_before_any_work(tiny_wan_generator, settings, param, match):
    options = {"prompt": "a cat", **SMALL, **settings}
    with mock.patch.object(tiny_wan_generator.pipeline, "__call__", side_effect=AssertionError("ran")):
        with pytest.raises(UserError, match=match) as info:
            tiny_wan_generator.generate(save_output=True, **options)
    assert info.value.param == param


def test_attention_backend_math_equals_default(tiny_wan_generator):
    import weakref

    with DiffGenerator.from_pretrained("tiny-wan-t2v", attention_backend="math") as math:
        a = tiny_wan_generator.generate("a fox", seed=5, return_frames=True, save_output=False, **SMALL).frames
        b = math.generate("a fox", seed=5, return_frames=True, save_output=False, **SMALL).frames
        encoder = weakref.ref(math.pipeline.components["text_encoder"])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # Leaving the block (close) released the weights at once, though the pipeline holds them in reference cycles.
    assert encoder() is None
    with pytest.raises(RuntimeError, match="this DiffGenerator was closed"):
        math.generate("a fox", seed=5, save_output=False, **SMALL)
    math.close()


def test_precisions_are_applied(tiny_wan_folder):
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v", precision="bf16", vae_precision="bf16", text_encoder_precisions=["bf16"])
    components = gen.pipeline.components
    assert components["transformer"].dtype == torch.bfloat16
    assert components["vae"].dtype == torch.bfloat16
    assert components["text_encoder"].dtype == torch.bfloat16
    res = gen.generate("a fox", return_frames=True, save_output=False, **SMALL)
    assert res.frames.shape == (9, 64, 64, 3)


def test_text_encoder_precisions_must_match_encoder_count(tiny_wan_folder):
    with pytest.raises(UserError, match="has 2 entries but .* 1 text encoder"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", text_encoder_precisions=["fp16", "fp16"])


def test_vae_tiling_and_encoder_skip(tiny_wan_folder):
    gen = DiffGenerator.from_pretrained(
        "tiny-wan-t2v", vae_tiling=True, vae_config={"tile_sample_min_height": 32, "tile_sample_min_width": 32, "load_encoder": False}
    )
    vae = gen.pipeline.components["vae"]
    assert vae.use_tiling and vae.tile_sample_min_height == 32 and vae.tile_sample_min_width == 32
    assert vae.tile_sample_stride_height == 24 and vae.tile_sample_stride_width == 24
    assert vae.encoder is None
    tiled = gen.generate("a fox", seed=4, return_frames=True, save_output=False, **SMALL).frames
    assert tiled.shape == (9, 64, 64, 3)
    whole = DiffGenerator.from_pretrained("tiny-wan-t2v").generate("a fox", seed=4, return_frames=True, save_output=False, **SMALL).frames
    # Every quadrant comes from the same latents: a skipped or misplaced tile would not correlate.
    # (Exact equality is not expected: 32-px tiles see little context through a random VAE.)
    for rows in (slice(0, 32), slice(32, 64)):
        for cols in (slice(0, 32), slice(32, 64)):
            r = np.corrcoef(tiled[:, rows, cols].ravel(), whole[:, rows, cols].ravel())[0, 1]
            assert r > 0.6, (rows, cols, r)


def test_placement_moves_offloaded_modules_for_their_stage():
    from sgld.models.placement import Placement

    placement = Placement(torch.device("cpu"), offloaded={"vae"})
    assert placement.offloaded == set()  # nothing to offload to on a CPU-only run
    placement = Placement(torch.device("cpu"), offloaded=set())
    placement.device = torch.device("cuda")  # logic only: record the moves, do not perform them
    placement.offloaded = {"transformer"}  # a DiT: copied in and back (LoRA merges change its weights in place)
    module = mock.MagicMock()
    with placement.active("transformer", module):
        module.to.assert_called_with(torch.device("cuda"), non_blocking=False)
    module.to.assert_called_with("cpu")
    other = mock.MagicMock()
    with placement.active("vae", other):
        pass
    other.to.assert_not_called()
    assert placement.home("transformer") == torch.device("cpu") and placement.home("vae") == torch.device("cuda")


def test_an_offloaded_text_encoder_is_sent_home_to_the_tensors_it_came_from():
    """Bringing a module whose weights never change in puts device copies of its CPU tensors in their slots; sending
    it home points it back at those same tensors (same storage: nothing copied back, pinning kept), tied weights and
    shared buffers included. A CPU clone stands in for the device copy (Placement makes it with ``.to(device)``)."""
    from sgld.models.placement import _bring_in, _send_home

    encoder = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=True))
    encoder[1].weight = encoder[0].weight  # tied, as language models tie their embeddings
    shared = torch.arange(3.0)
    for layer in encoder:
        layer.register_buffer("table", shared)
    before = {name: (t.data_ptr(), t.clone()) for name, t in encoder.state_dict(keep_vars=True).items()}
    parameter_objects = [id(p) for p in encoder.parameters()]
    copies = []
    home = _bring_in(encoder, lambda tensor: copies.append(tensor.clone()) or copies[-1])
    assert len(copies) == 3  # the tied weight, the bias, the shared buffer: each copied once
    inside = encoder.state_dict(keep_vars=True)
    assert all(inside[name].data_ptr() != pointer for name, (pointer, _) in before.items())
    assert encoder[0].weight is encoder[1].weight and encoder[0].table is encoder[1].table  # still shared
    _send_home(encoder, home)
    after = encoder.state_dict(keep_vars=True)
    for name, (pointer, value) in before.items():
        assert after[name].data_ptr() == pointer and torch.equal(after[name], value), name
    assert [id(p) for p in encoder.parameters()] == parameter_objects  # the Parameter objects are kept
    assert encoder[0].table is encoder[1].table is shared


def test_offload_flags_select_components():
    from sgld.models.placement import offloaded_components
    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": "tiny-wan-t2v", "text_encoder_cpu_offload": True})
    # LTX-2's text connectors wait with its text encoder; its audio VAE, vocoder and latent upsampler with the VAE.
    assert offloaded_components(run) == {"text_encoder", "text_encoder_2", "connectors"}
    run = run_config_from_options({"model_path": "tiny-wan-t2v", "dit_cpu_offload": True, "vae_cpu_offload": True})
    # Every DiT: Wan2.2's two experts, MiniMax-H3's ref2va partition.
    assert offloaded_components(run) == {"transformer", "transformer_2", "transformer_ref", "vae", "audio_vae",
                                         "vocoder", "latent_upsampler"}


def test_pickle_only_folder_is_refused(tmp_path, tiny_wan_folder):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_wan_folder, folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        state = __import__("safetensors.torch", fromlist=["load_file"]).load_file(weights)
        torch.save(state, folder / "transformer" / "diffusion_pytorch_model.bin")
        weights.unlink()
    with pytest.raises(Exception, match="safetensors"):
        DiffGenerator.from_pretrained(str(folder))
