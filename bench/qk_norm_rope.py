"""Qwen-Image's QK RMSNorm + RoPE (the largest of its fused elementwise kernels under compile: 5.9 ms of a 132 ms
forward on an H100, about 1 TB/s) in three forms, to see what a dedicated kernel would save before building one:

    python3 bench/qk_norm_rope.py --out qk_norm_rope.json      # on a GPU (TRITON_INTERPRET=1 runs it on a CPU, slowly)

- ``compiled``: diffusers' RMSNorm arithmetic (sgld's ``rms_norm``) then sgld's real rotation (``rotate_pairs``),
  as its compiled blocks run it;
- ``compiled_flip``: the same arithmetic written with the pairs swapped by a flip instead of unbind/stack;
- ``triton``: sgld's ``sgld::qk_norm_rope`` (one Triton kernel reading each head's row once and writing it once),
  what sgld's compiled Qwen-Image blocks run on CUDA.

Each is checked against diffusers' eager arithmetic (bf16 outputs: the count of elements that differ, and the
largest difference) and timed (median of CUDA-event times); GB/s counts one read and one write of the tensor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_profile import back_to_back_ms  # noqa: E402
from sgld.levers.qk_norm_rope import qk_norm_rope, rms_norm  # noqa: E402
from sgld.levers.real_rope import rotate_pairs  # noqa: E402

EPS = 1e-6


def reference(x: torch.Tensor, weight: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """diffusers' own modules, eager: its ``RMSNorm``, then its complex RoPE."""
    from diffusers.models.normalization import RMSNorm
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    norm = RMSNorm(x.shape[-1], eps=EPS).to(x.device, weight.dtype)
    norm.weight.copy_(weight)
    return apply_rotary_emb_qwen(norm(x), freqs, use_real=False)


def current(x: torch.Tensor, weight: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """sgld's compiled form: the norm, then ``rotate_pairs``."""
    return rotate_pairs(rms_norm(x, weight, EPS), freqs.unsqueeze(1))


def flipped(x: torch.Tensor, weight: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """The same product as ``x cos + swap(x) sin``, the pair swap a flip and the sign folded into the sines."""
    normed = rms_norm(x, weight, EPS).float()
    angles = torch.view_as_real(freqs).unsqueeze(1)  # (S, 1, D/2, 2)
    cos = angles[..., 0].repeat_interleave(2, -1)
    sin = (angles[..., 1:2] * torch.tensor([-1.0, 1.0], device=x.device)).flatten(-2)
    swapped = normed.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (normed * cos + swapped * sin).type_as(x)


def fused(x: torch.Tensor, weight: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """sgld's op (``sgld.levers.qk_norm_rope``: one Triton kernel on CUDA), as its compiled blocks call it."""
    return qk_norm_rope(x, weight, torch.view_as_real(freqs), EPS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("qk_norm_rope.json"))
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, args.tokens, args.heads, 128, device=device, generator=generator).to(torch.bfloat16) * 3
    weight = (1 + 0.1 * torch.randn(128, device=device, generator=generator)).to(torch.bfloat16)
    angles = torch.rand(args.tokens, 64, device=device, generator=generator) * 100
    freqs = torch.polar(torch.ones_like(angles), angles)
    with torch.no_grad():
        want = reference(x, weight, freqs)
        forms = {"compiled": torch.compile(current, fullgraph=True) if cuda else current,
                 "compiled_flip": torch.compile(flipped, fullgraph=True) if cuda else flipped,
                 "triton": fused}
        gigabytes = 2 * x.numel() * x.element_size() / 1e9
        report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "shape": list(x.shape), "forms": {}}
        for name, fn in forms.items():
            got = fn(x, weight, freqs)
            differ = (got != want)
            row = {"elements_differing": int(differ.sum()), "share_differing": differ.float().mean().item(),
                   "max_abs_diff": (got.float() - want.float()).abs().max().item()}
            row["ms"] = back_to_back_ms(lambda: fn(x, weight, freqs), cuda, args.repeats)
            row["GB_per_s"] = gigabytes / row["ms"] * 1e3
            report["forms"][name] = row
            print(name, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
