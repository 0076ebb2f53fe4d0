"""diffusers' tanh-GELU projection (``diffusers.models.activations.GELU``: a Linear, then GELU) as one cuBLASLt GEMM
with the GELU applied in its epilogue.

The feed-forward of Qwen-Image, Wan, FLUX, HunyuanVideo and LTX-2 blocks widens to 4x the model width and applies
a tanh GELU there. Run as diffusers writes it, the GEMM stores its wide output and a second kernel (Inductor's, when
compiled) reads it back, applies the GELU and stores it again: for Qwen-Image at 1024² that is 200 MB a block and
4.3 ms of a 132 ms forward on an H100 (docs/performance.md). ``torch._addmm_activation(..., use_gelu=True)``
asks cuBLASLt for the GEMM with a bias-and-GELU epilogue (PyTorch applies the tanh GELU after the GEMM where
cuBLASLt cannot run the shape), so the wide output is written once; that the epilogue is the tanh GELU is checked
on the device before anything is swapped (``epilogue_gelu_is_tanh``). It is wrapped in a custom op so that Inductor,
which would decompose it back into a GEMM and a GELU kernel, calls it as it is.

Arithmetic: the epilogue applies the GELU to the fp32 accumulator plus bias and rounds once; diffusers rounds the
GEMM's output to bf16 first. Outputs differ by that rounding (docs/performance.md gives the measured difference).
Only CUDA tensors take the fused path, so CPU runs (the tests' reference comparisons) are diffusers' arithmetic; a
projection that is not a plain ``nn.Linear`` with a bias (a LoRA layer, FP8 or GGUF weights) keeps diffusers' path.
"""

from __future__ import annotations

import functools
import logging

import torch
from diffusers.models.activations import GELU
from torch import nn

log = logging.getLogger(__name__)


@torch.library.custom_op("sgld::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight.T + bias, approximate="tanh")`` in one GEMM with a GELU epilogue (cuBLASLt on CUDA)."""
    if not x.is_cuda:  # PyTorch's CPU kernel of the fused call applies the exact (erf) GELU, not the tanh one
        return nn.functional.gelu(nn.functional.linear(x, weight, bias), approximate="tanh")
    flat = x.reshape(-1, x.shape[-1])
    return torch._addmm_activation(bias, flat, weight.t(), use_gelu=True).reshape(*x.shape[:-1], weight.shape[0])


@linear_gelu_tanh.register_fake
def _linear_gelu_tanh_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


FUSED_DEVICES = ("cuda",)  # where the op runs cuBLASLt's epilogue; elsewhere diffusers' own arithmetic is kept


def takes_fused_path(proj: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether ``proj`` applied to ``hidden_states`` runs as the fused op: a plain ``nn.Linear`` with a bias (not a
    LoRA wrapper, FP8 or GGUF layer), inputs in its dtype and on its device (an offload hook on ``proj`` itself,
    which the fused call would not run, leaves its weight elsewhere), on a device in ``FUSED_DEVICES``."""
    return (type(proj) is nn.Linear and proj.bias is not None and hidden_states.device.type in FUSED_DEVICES
            and hidden_states.dtype == proj.weight.dtype and hidden_states.device == proj.weight.device)


class FusedGELU(GELU):
    """diffusers' ``GELU`` (same ``proj``, same state dict) whose tanh-GELU projection is one fused GEMM on CUDA."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # noqa: D102 - diffusers' GELU.forward, fused
        if takes_fused_path(self.proj, hidden_states):
            return linear_gelu_tanh(hidden_states, self.proj.weight, self.proj.bias)
        return super().forward(hidden_states)


@functools.cache  # once a device and process: every DiT load asks
def epilogue_gelu_is_tanh(device: torch.device) -> bool:
    """Whether the fused op on ``device`` applies the tanh GELU (cuBLASLt's GELU epilogue is documented only as
    "GELU"; PyTorch's own fallback for it applies tanh, and its CPU kernel the exact erf one). Checked in fp32 on
    values where the two GELUs differ by up to ~5e-4: the op must be four times closer to tanh than that."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 128, device=device, generator=generator)
    weight = torch.randn(256, 128, device=device, generator=generator) / 128 ** 0.5 * 2
    bias = torch.zeros(256, device=device)
    with torch.no_grad():
        projected = nn.functional.linear(x, weight, bias)
        tanh = nn.functional.gelu(projected, approximate="tanh")
        gap = (tanh - nn.functional.gelu(projected)).abs().max()
        return bool((linear_gelu_tanh(x, weight, bias) - tanh).abs().max() < gap / 4)


def fuse_gelu_projections(transformer: nn.Module, device: torch.device) -> int:
    """Make each of ``transformer``'s diffusers tanh-GELU projections a ``FusedGELU`` (its class swapped: modules,
    names and weights stay); returns how many. None on a CUDA device whose fused GEMM is not the tanh GELU."""
    if device.type in FUSED_DEVICES and not epilogue_gelu_is_tanh(device):
        log.warning("the GEMM-with-GELU epilogue on %s is not the tanh GELU: feed-forward projections stay unfused",
                    device)
        return 0
    count = 0
    for module in transformer.modules():
        if type(module) is GELU and module.approximate == "tanh":
            module.__class__ = FusedGELU
            count += 1
    return count
