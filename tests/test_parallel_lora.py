"""Switchable (dynamic) LoRA adapters under sequence parallelism: on 2 gloo ranks with Ulysses they give the frames
one process gives (the adapters' layers act per token, inside the context-parallel split). Switching them on a
server of two ranks (off, on, by nickname) is SGLang's wan2_2_t2v_a14b_lora_2gpu case in tests/test_sglang_suite.py."""

from __future__ import annotations

import numpy as np

from tests.support.lora import make_lora

TOLERANCE = 2  # /255, per pixel, as tests/test_parallel.py


def _generate(**options):
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    base = dict(model_path="tiny-wan22-t2v", prompt="a red fox running through fresh snow", seed=3, height=64, width=64,
                num_frames=9, num_inference_steps=2, save_output=False, return_frames=True)
    return run_generation(run_config_from_options({**base, **options})).frames.astype(int)


def test_dynamic_lora_under_ulysses_equals_one_process(tmp_path, tiny_wan22_folder):
    adapter = make_lora(tiny_wan22_folder, tmp_path / "lora", seed=4, b_scale=8.0)
    lora = dict(lora_path=str(adapter), lora_merge_mode="dynamic", lora_target="all")
    single = _generate(**lora)
    ranks = _generate(**lora, num_gpus=2, ulysses_degree=2)
    assert np.abs(ranks - single).max() <= TOLERANCE
    assert np.abs(single - _generate()).mean() > 5  # the adapter is on: it moves the frames
