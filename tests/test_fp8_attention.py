"""FP8 attention (--attention-backend fa3_fp8): its quantization and its math, on CPU.

The kernel itself runs only on a Hopper GPU (bench/attention.py and bench/speed.py measure it there);
on CPU the backend runs the same quantization and attends over the dequantized inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from sgld.levers.fp8_attention import BACKEND_NAME, dequantize_per_head, fp8_attention, quantize_per_head

SMALL = dict(height=32, width=32, num_frames=5, num_inference_steps=4, seed=5, save_output=False, return_frames=True)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _qkv(seed: int = 0, batch: int = 2, tokens: int = 96, heads: int = 3, dim: int = 32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, heads, dim, generator=g) * (1 + torch.arange(heads).view(1, 1, heads, 1))
            for _ in range(3)]


def test_one_scale_per_batch_row_and_head_fills_the_e4m3_range():
    x = _qkv()[0]
    values, scale = quantize_per_head(x)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (2, 3) and scale.dtype == torch.float32
    assert torch.allclose(values.float().abs().amax(dim=(1, 3)), torch.full((2, 3), 448.0))
    error = (dequantize_per_head(values, scale, torch.float32) - x).abs().max() / x.abs().max()
    assert error < 2 ** -4  # e4m3 keeps 3 mantissa bits


def test_centring_k_leaves_attention_unchanged_and_quantizes_it_closer():
    q, k, v = _qkv()
    k = k + 5.0  # an offset shared by every token, as real keys often have
    exact = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    centred = k - k.mean(dim=1, keepdim=True)
    same = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), centred.transpose(1, 2),
                                                            v.transpose(1, 2))
    assert torch.allclose(same, exact, atol=1e-4, rtol=1e-4)
    plain_error = (dequantize_per_head(*quantize_per_head(k), torch.float32) - k).abs().mean()
    centred_error = (dequantize_per_head(*quantize_per_head(k, center=True), torch.float32) - centred).abs().mean()
    assert centred_error < plain_error / 2


def test_fp8_attention_is_close_to_exact_attention_and_runs_a_masked_call_exactly():
    q, k, v = _qkv()
    exact = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                             v.transpose(1, 2)).transpose(1, 2)
    out = fp8_attention(q, k, v)
    assert out.shape == exact.shape and not torch.equal(out, exact)  # it did quantize
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), exact.flatten(), dim=0)
    assert cosine > 0.99, cosine  # random inputs, heads up to 3x sharper
    # FA3's FP8 kernel takes no mask: a masked call (text padding) runs SDPA, exact.
    mask = torch.ones(2, 1, 96, 96, dtype=torch.bool)
    mask[..., 80:] = False
    masked = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                              attn_mask=mask).transpose(1, 2)
    assert torch.equal(fp8_attention(q, k, v, attn_mask=mask), masked)


def test_the_fa3_backend_runs_unmasked_calls_on_fa3_and_masked_ones_on_sdpa(monkeypatch):
    """diffusers' FA3 backend refuses any mask (LTX-2's diffusers pipeline passes one on its text cross-attention):
    sgld's fa3 hands that call to SDPA and keeps FA3 for the rest."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from sgld.diffusers_patches import apply_diffusers_patches
    from sgld.levers import fa3_attention
    from sgld.levers.attention import ATTENTION_BACKENDS

    apply_diffusers_patches()  # what every engine does at load: it registers sgld's backends
    assert _AttentionBackendRegistry._backends[AttentionBackendName(ATTENTION_BACKENDS["fa3"])] is \
        fa3_attention.fa3_attention
    calls = []
    monkeypatch.setattr(fa3_attention, "_flash_attention_3", lambda q, k, v, scale, is_causal: calls.append(q) or q)
    q, k, v = _qkv()
    assert fa3_attention.fa3_attention(q, k, v) is q and len(calls) == 1
    mask = torch.ones(2, 1, 96, 96, dtype=torch.bool)
    mask[..., 70:] = False
    masked = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                              attn_mask=mask).transpose(1, 2)
    assert torch.equal(fa3_attention.fa3_attention(q, k, v, attn_mask=mask), masked) and len(calls) == 1


def test_the_backend_runs_through_a_model_and_stays_close_to_its_exact_output(tiny_wan_folder):
    """The lever's logic through diffusers' dispatch on a tiny Wan: a different, close video."""
    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")  # its own: the backend is set on its modules
    exact = gen.generate("a red fox", **SMALL).frames
    other_seed = gen.generate("a red fox", **{**SMALL, "seed": 6}).frames
    # The CPU path of the backend (the flag itself falls back to the default attention on CPU). diffusers'
    # set_attention_backend also sets its process-wide default, which every later test would inherit:
    # its context manager sets and restores that default, which this model's attention follows.
    from diffusers.models.attention_dispatch import attention_backend

    with attention_backend(BACKEND_NAME):
        fp8 = gen.generate("a red fox", **SMALL).frames
    assert not np.array_equal(fp8, exact)
    # The tiny model's frames are close to noise, so "close" is relative: FP8 moves them far less than a
    # new seed does (measured: 28.3 dB against 21.1 dB).
    assert _psnr(fp8, exact) > _psnr(other_seed, exact) + 5


def test_the_kernel_probe_runs_in_a_child_so_a_crash_is_a_reason_not_a_dead_process():
    """A build whose FP8 call segfaulted (H200, 2026-12-06) took the bench down with it; the probe now runs in a
    child process: a clean exit means usable, an exception or a signal is the reason given."""
    from sgld.levers.fp8_attention import probe_in_child

    assert probe_in_child("import sgld.levers.fp8_attention", [], "the probe") is None  # the child imports sgld
    failed = probe_in_child("import sys; raise RuntimeError('no FP8 kernel for ' + sys.argv[1])", ["hdim 128"],
                            "the probe")
    assert failed.startswith("the probe fails (RuntimeError: no FP8 kernel for hdim 128)") and "FA3_FP8=1" in failed
    crashed = probe_in_child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", [], "the probe")
    assert crashed.startswith("the probe crashed the process that tried it (SIGSEGV)")
    assert "--attention-backend sage" in crashed
