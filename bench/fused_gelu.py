"""The tanh-GELU feed-forward projection fused into its GEMM (``sgld.levers.fused_gelu``) against diffusers' two
steps, at the shapes our models run: ms a call (eager and compiled), and the difference.

    python3 bench/fused_gelu.py --out fused_gelu.json      # on a GPU

Also reports whether the device's fused GEMM applies the tanh GELU (``epilogue_gelu_is_tanh``: sgld swaps nothing
where it does not) and the fp32 difference of the fused op against the tanh and the erf GELU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_profile import back_to_back_ms  # noqa: E402
from sgld.levers.fused_gelu import epilogue_gelu_is_tanh, linear_gelu_tanh  # noqa: E402

# (name, tokens, width, hidden): the feed-forward's first projection, one CFG branch (batch 1).
SHAPES = (
    ("qwen_1024_image", 4096, 3072, 12288),
    ("qwen_1024_text", 40, 3072, 12288),
    ("wan13_480p", 32760, 1536, 8960),
    ("flux_1024_image", 4096, 3072, 12288),
)


def unfused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """diffusers' ``GELU`` module: the projection, then the tanh GELU."""
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fused_gelu.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "epilogue_is_tanh": epilogue_gelu_is_tanh(device), "shapes": {}}
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(256, 512, device=device, generator=generator)
    weight = torch.randn(1024, 512, device=device, generator=generator) / 512 ** 0.5 * 2
    bias = torch.randn(1024, device=device, generator=generator)
    with torch.no_grad():
        fused = linear_gelu_tanh(x, weight, bias)
        projected = F.linear(x, weight, bias)
        report["fp32_max_abs_vs_tanh"] = (fused - F.gelu(projected, approximate="tanh")).abs().max().item()
        report["fp32_max_abs_vs_erf"] = (fused - F.gelu(projected)).abs().max().item()
    print(json.dumps({k: v for k, v in report.items() if k != "shapes"}), flush=True)
    compiled_unfused = torch.compile(unfused, fullgraph=True)
    compiled_fused = torch.compile(linear_gelu_tanh, fullgraph=True)
    with torch.no_grad():
        for name, tokens, width, hidden in SHAPES:
            x = torch.randn(1, tokens, width, device=device, dtype=torch.bfloat16, generator=generator)
            weight = torch.randn(hidden, width, device=device, dtype=torch.bfloat16, generator=generator) * 0.02
            bias = torch.randn(hidden, device=device, dtype=torch.bfloat16, generator=generator) * 0.02
            want = unfused(x, weight, bias).float()
            row = {"unfused_ms": back_to_back_ms(lambda: unfused(x, weight, bias), True),
                   "fused_ms": back_to_back_ms(lambda: linear_gelu_tanh(x, weight, bias), True),
                   "compiled_unfused_ms": back_to_back_ms(lambda: compiled_unfused(x, weight, bias), True),
                   "compiled_fused_ms": back_to_back_ms(lambda: compiled_fused(x, weight, bias), True),
                   "bf16_max_abs_diff": (linear_gelu_tanh(x, weight, bias).float() - want).abs().max().item(),
                   "bf16_max_abs_out": want.abs().max().item()}
            row["compiled_speedup"] = row["compiled_unfused_ms"] / row["compiled_fused_ms"]
            report["shapes"][name] = row
            print(name, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
