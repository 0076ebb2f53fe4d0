"""FP8 linear layers for the DiT's repeated blocks (lossy, opt-in: ``model.quantization=fp8``).

Weights are stored as float8 e4m3 with one scale per output row, made once at load; each
call quantizes its input with one scale per token, so an outlier token costs only its own
precision. On a GPU with FP8 tensor cores (compute capability 8.9+: Ada, Hopper) the
product runs through ``torch._scaled_mm`` with those row-wise scales (faster than the bf16 GEMMs:
docs/performance.md has the measured ratio); the per-token quantization is a row reduction that regional compile
fuses with the preceding elementwise work, but that kernel runs well below memory bandwidth,
which eats much of the gain (docs/performance.md). Elsewhere the same arithmetic runs
dequantized (CPU tests).

Only the linear layers inside the repeated transformer blocks are converted, and not the
adaptive-norm modulation layers (one row per sample: no speed to win, and their error
moves every token at once); embedders and the output projection stay in bf16.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)
# _scaled_mm needs both matrix sizes divisible by 16.
ALIGN = 16


def _rowwise_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale) in e4m3 and the fp32 scale per row (the row's absolute max maps to the e4m3 max)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def fp8_matmul_supported(device: torch.device) -> bool:
    """Whether ``device`` multiplies FP8 matrices in hardware (CUDA compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


class Fp8Linear(nn.Module):
    """An ``nn.Linear`` whose weight is e4m3 with row-wise scales and whose input is quantized per token."""

    def __init__(self, linear: nn.Linear, hardware: bool):
        super().__init__()
        self.hardware = hardware  # fixed at load: a plain bool keeps the compiled graph free of device queries
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = linear.weight.dtype
        weight, scale = _rowwise_quantize(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # (1, out): _scaled_mm's scale_b
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` with both operands in e4m3; the result in the layer's original dtype."""
        rows = x.reshape(-1, self.in_features)
        x_fp8, x_scale = _rowwise_quantize(rows)
        if self.hardware:
            out = torch._scaled_mm(x_fp8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                   out_dtype=self.out_dtype)
        else:  # the same quantized operands, multiplied in fp32
            weight = self.weight_fp8.float() * self.weight_scale.t()
            out = ((x_fp8.float() * x_scale) @ weight.t()).to(self.out_dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3 row-wise"


def _is_modulation(name: str) -> bool:
    """Adaptive-norm modulation layers: FLUX's ``norm1.linear`` / ``norm.linear``, Qwen-Image's ``img_mod.1``."""
    return any(part.startswith("norm") or part.endswith("_mod") for part in name.split(".")[:-1])


def _convertible(name: str, module: nn.Module, hardware: bool) -> bool:
    if not isinstance(module, nn.Linear) or _is_modulation(name):
        return False
    # Layers _scaled_mm cannot take stay in their dtype (only on hardware: emulation takes any size).
    return not hardware or (module.in_features % ALIGN == 0 and module.out_features % ALIGN == 0)


def quantize_blocks_fp8(transformer: nn.Module, device: torch.device) -> int:
    """Replace the linear layers of ``transformer``'s repeated blocks with ``Fp8Linear``; returns how many.

    ``device`` is where the DiT will run: it decides between FP8 tensor cores and the
    dequantized fallback. The bf16 weights are released: the FP8 copy is half their size.
    """
    hardware = fp8_matmul_supported(device)
    block_classes = set(getattr(transformer, "_repeated_blocks", None) or ())
    if not block_classes:
        raise ValueError(f"{type(transformer).__name__} names no repeated blocks to quantize")
    converted = 0
    for block in transformer.modules():
        if type(block).__name__ not in block_classes:
            continue
        for name, module in list(block.named_modules()):
            if not name or not _convertible(name, module, hardware):
                continue
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, Fp8Linear(module, hardware))
            converted += 1
    if not converted:
        raise ValueError(f"{type(transformer).__name__}: no linear layer in its blocks could be converted to FP8")
    return converted
