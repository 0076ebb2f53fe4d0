"""bench/upscaler.py: its FLOP count is the one the performance notes use (about 14 TFLOP a 832x480 frame for the
x4 network). sgld's restacked dense block, which the bench times, is tested in test_finishing.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from sgld.finishing.realesrgan import RRDBNet


def _bench():
    """bench/upscaler.py as a module (bench/ is not a package, and not put on sys.path for the whole session)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "upscaler.py"
    spec = importlib.util.spec_from_file_location("bench_upscaler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_flops_of_the_x4_network_on_a_wan_480p_frame():
    conv_flops = _bench().conv_flops

    small = conv_flops(RRDBNet(4).eval(), torch.rand(1, 3, 16, 16))  # every conv's cost is per input pixel
    assert small / (16 * 16) * (480 * 832) / 1e12 == pytest.approx(14.3, abs=0.1)
