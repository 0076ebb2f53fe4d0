"""Finishing after decode: RIFE frame interpolation and Real-ESRGAN upscaling on tiny checkpoints built here.

Random weights say nothing about a model's quality, so what is tested is the plumbing: the warp and blend with a
known flow put a gradient moving one pixel per frame at its midpoint; an IFNet whose weights are set so its flow is
that known flow does the same end to end (padding, scales, cropping); frame counts, fps, sizes, files, weight
formats (safetensors, pickle through weights_only) and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sgld import DiffGenerator
from sgld.errors import UserError
from sgld.finishing.realesrgan import RRDBNet, RestackedDenseBlock, SRVGGNetCompact, build_upscaler, restack, upscale
from sgld.finishing.rife import IFNet, backward_warp, blend, interpolate_pairs, load_ifnet

SMALL = dict(prompt="a red fox", height=32, width=32, num_frames=5, num_inference_steps=2, seed=5, return_frames=True)


def moving_gradient(frames: int, height: int = 24, width: int = 40) -> torch.Tensor:
    """(frames, 3, H, W): a horizontal ramp in [0.1, 0.9] shifted right by one pixel per frame."""
    x = torch.arange(width, dtype=torch.float64)
    rows = [0.1 + 0.8 * (x - k) / width for k in range(frames)]
    return torch.stack([r.expand(3, height, width) for r in rows]).float()


def known_flow_ifnet() -> IFNet:
    """An IFNet whose estimate is the flow of a one-pixel move to the right: -0.5 px to frame 0, +0.5 px to frame 1."""
    torch.manual_seed(0)
    net = IFNet()
    for block in (net.block0, net.block1, net.block2, net.block3):
        deconv = block.lastconv[0]
        torch.nn.init.zeros_(deconv.weight)
        torch.nn.init.zeros_(deconv.bias)
    # PixelShuffle(2) makes output channel c from input channels 4c..4c+3; block0's flow is scaled by its level (8).
    for channel, value in ((0, -0.5 / 8), (2, 0.5 / 8)):
        net.block0.lastconv[0].bias.data[4 * channel:4 * channel + 4] = value
    return net.eval()


def test_warp_and_blend_put_a_moving_gradient_at_its_midpoint():
    frames = moving_gradient(2)
    flow = torch.zeros(1, 4, 24, 40)
    flow[:, 0], flow[:, 2] = -0.5, 0.5
    middle = blend(frames[:1], frames[1:], flow, torch.zeros(1, 1, 24, 40))
    expected = (frames[:1] + frames[1:]) / 2  # a linear ramp half a pixel to the right: the two frames' mean
    inner = (..., slice(1, -1))  # the border column repeats the edge pixel
    assert (middle - expected)[inner].abs().max() < 1e-5
    assert torch.allclose(backward_warp(frames[1:], torch.zeros(1, 2, 24, 40)), frames[1:], atol=1e-6)  # zero flow


def test_interpolation_end_to_end_with_a_known_flow():
    frames = moving_gradient(3, height=30, width=50)  # not multiples of 32: padded, then cropped back
    out = interpolate_pairs(known_flow_ifnet(), frames, exp=1)
    assert out.shape == (5, 3, 30, 50)
    assert torch.equal(out[0::2], frames)  # the inputs stay as they were
    midpoints = (frames[:-1] + frames[1:]) / 2
    error = (out[1::2] - midpoints)[..., 1:-1].abs().max().item()
    assert error < 1e-4, f"midpoint error {error * 255:.4f}/255"
    assert interpolate_pairs(known_flow_ifnet(), frames, exp=2).shape[0] == 9  # (3 - 1) * 4 + 1


def test_rife_weights_load_strictly():
    state = {f"module.{key}": value for key, value in IFNet().state_dict().items()}  # DataParallel's prefix
    assert isinstance(load_ifnet(state), IFNet)
    state.pop("module.block3.lastconv.0.bias")
    with pytest.raises(ValueError, match="missing.*block3.lastconv.0.bias"):
        load_ifnet(state)


def test_upscalers_shapes_and_a_known_input():
    torch.manual_seed(0)
    frames = torch.rand(3, 3, 12, 20)
    rrdb = build_upscaler({"params_ema": RRDBNet(2, feat=8, blocks=1, grow=4).state_dict()})
    assert isinstance(rrdb, RRDBNet) and upscale(rrdb, frames, 2).shape == (3, 3, 24, 40)
    assert upscale(rrdb, frames, 3).shape == (3, 3, 36, 60)  # x2 network, then bicubic to x3
    compact = SRVGGNetCompact(4, feat=8, convs=2)
    torch.nn.init.zeros_(compact.body[-1].weight)
    torch.nn.init.zeros_(compact.body[-1].bias)
    compact = build_upscaler(compact.state_dict())
    nearest = torch.nn.functional.interpolate(frames, scale_factor=4, mode="nearest")
    assert torch.equal(upscale(compact, frames, 4), nearest)  # its residual path alone: nearest-neighbour
    with pytest.raises(ValueError, match="not a Real-ESRGAN state dict"):
        build_upscaler({"weight": torch.zeros(1)})
    # A network in reduced precision (fp16 on a GPU; bf16 here, which the CPU's convolutions take) is fed frames
    # in its dtype and answers float32, within that precision of the float32 network.
    low = copy.deepcopy(rrdb).to(torch.bfloat16)
    out = upscale(low, frames, 2)
    assert out.dtype == torch.float32 and (out - upscale(rrdb, frames, 2)).abs().max() < 0.05


def test_restacked_dense_blocks_compute_the_same_network():
    """restack() (what the request path runs: wider convolutions, no concatenations) keeps Real-ESRGAN's function."""
    torch.manual_seed(0)
    net = RRDBNet(4, blocks=2).eval()
    frames = torch.rand(2, 3, 12, 20)
    with torch.no_grad():
        want = net(frames)
        got = restack(copy.deepcopy(net))(frames)
    assert got.shape == want.shape == (2, 3, 48, 80)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert all(isinstance(block, RestackedDenseBlock) for block in restack(net).body[0].children())


def test_chunked_finishing_equals_the_whole_clip_at_once():
    """finish() works in chunks of CHUNK frames (the interpolation's overlapping by one); the chunks, written into one
    output, equal the whole clip run at once."""
    from sgld.finishing import apply

    frames = (moving_gradient(apply.CHUNK + 3, height=32, width=32).permute(0, 2, 3, 1) * 255).round().byte().numpy()
    cpu = torch.device("cpu")
    whole = apply._to_tensor(frames, cpu)
    net = known_flow_ifnet()
    expected = apply._to_uint8(interpolate_pairs(net, whole, exp=2))
    assert np.array_equal(apply._interpolate(net, frames, 2, 1.0, cpu), expected)
    torch.manual_seed(1)
    upscaler = build_upscaler(SRVGGNetCompact(2, feat=8, convs=2).state_dict())
    expected = apply._to_uint8(upscale(upscaler, whole, 2))
    assert expected.shape == (apply.CHUNK + 3, 64, 64, 3) and expected.flags.c_contiguous
    assert np.array_equal(apply._upscale(upscaler, frames, 2, cpu), expected)


def test_a_compiling_run_compiles_the_upscalers_blocks(weights):
    """finish(compile=True) (a run with model.enable_torch_compile) loads the upscaler with each RRDB block compiled,
    kept apart from the eager one, and its output equals the eager upscaler's within a level."""
    from types import SimpleNamespace

    from sgld.finishing import apply

    settings = SimpleNamespace(enable_frame_interpolation=False, enable_upscaling=True, upscaling_scale=2,
                               upscaling_model_path=str(weights / "x2.pth"))
    frames = (moving_gradient(5, height=12, width=20).permute(0, 2, 3, 1) * 255).round().byte().numpy()
    cpu = torch.device("cpu")
    eager, _ = apply.finish(frames, 16, settings, video=True, device=cpu)
    compiled, fps = apply.finish(frames, 16, settings, video=True, device=cpu, compile=True)
    assert fps == 16 and compiled.shape == eager.shape == (5, 24, 40, 3)
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1
    nets = {key[3]: net for key, net in apply._LOADED.items() if key[1] == str(weights / "x2.pth")}
    assert set(nets) == {False, True}
    assert all(block._compiled_call_impl is not None for block in nets[True].body)
    assert all(block._compiled_call_impl is None for block in nets[False].body)
    # The compiled network meets one batch length: the clip's fifth frame runs padded to a batch of four.
    seen = []
    nets[True].conv_first.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    assert np.array_equal(apply._upscale(nets[True], frames, 2, cpu), compiled)
    assert seen == [4, 4]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A RIFE folder (flownet.pkl, pickled as Practical-RIFE saves it) and Real-ESRGAN files in both formats."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("finishing")
    (root / "rife").mkdir()
    torch.save({f"module.{k}": v for k, v in known_flow_ifnet().state_dict().items()}, root / "rife" / "flownet.pkl")
    torch.manual_seed(1)
    torch.save({"params_ema": RRDBNet(2, feat=8, blocks=1, grow=4).state_dict()}, root / "x2.pth")
    save_file(SRVGGNetCompact(4, feat=8, convs=2).state_dict(), str(root / "x4.safetensors"))
    return root


def test_a_video_request_is_interpolated_and_upscaled(weights, tmp_path):
    import av

    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    plain = gen.generate(**SMALL, save_output=False)
    finished = gen.generate(**SMALL, enable_frame_interpolation=True, frame_interpolation_exp=2,
                            frame_interpolation_model_path=str(weights / "rife"), enable_upscaling=True,
                            upscaling_scale=2, upscaling_model_path=str(weights / "x2.pth"), output_path=str(tmp_path))
    assert finished.frames.shape == ((5 - 1) * 4 + 1, 64, 64, 3) and finished.fps == plain.fps * 4
    assert {"frame_interpolation", "upscaling"} <= set(finished.timings)
    with av.open(str(finished.path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (64, 64, plain.fps * 4)
        assert sum(1 for _ in container.decode(stream)) == 17


def test_an_image_is_upscaled_not_interpolated(weights):
    result = DiffGenerator.from_pretrained("tiny-flux").generate(
        prompt="a cat", height=64, width=64, num_inference_steps=2, seed=5, return_frames=True, save_output=False,
        enable_upscaling=True, upscaling_scale=4, upscaling_model_path=str(weights / "x4.safetensors"),
        enable_frame_interpolation=True, frame_interpolation_model_path=str(weights / "rife"))
    assert result.frames.shape == (1, 256, 256, 3)


class NotATensor:
    """A class a weights-only unpickler must refuse to build."""


def test_weights_are_refused_when_unsafe_or_missing(tmp_path):
    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    evil = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": NotATensor()}, evil)
    with pytest.raises(UserError, match="weights_only"):
        gen.generate(**SMALL, save_output=False, enable_upscaling=True, upscaling_model_path=str(evil))
    with pytest.raises(UserError, match="not downloaded"):  # HF_HUB_OFFLINE in the tests: the cache only
        gen.generate(**SMALL, save_output=False, enable_upscaling=True, upscaling_model_path="someone/esrgan:x4.pth")
    with pytest.raises(UserError, match="frame_interpolation_exp must be in \\[1, 4\\]"):
        gen.generate(**SMALL, enable_frame_interpolation=True, frame_interpolation_exp=5)
    with pytest.raises(UserError, match="upscaling_scale must be in \\[1, 8\\]"):
        gen.generate(**SMALL, enable_upscaling=True, upscaling_scale=16)


def test_flags_map_to_keys():
    from sgld.cli import build_parser, collect_options
    from sgld.run_config import run_config_from_options

    args = build_parser().parse_args(["generate", "--model-path", "tiny-wan-t2v", "--enable-frame-interpolation",
                                      "--frame-interpolation-exp", "2", "--enable-upscaling", "--upscaling-scale", "2",
                                      "--upscaling-model-path", "org/esrgan:x2.pth"])
    f = run_config_from_options(collect_options(args)).finishing
    assert (f.enable_frame_interpolation, f.frame_interpolation_exp, f.enable_upscaling, f.upscaling_scale,
            f.upscaling_model_path) == (True, 2, True, 2, "org/esrgan:x2.pth")
