"""diffusers' tanh-GELU projections as one GEMM with a GELU epilogue (``sgld.levers.fused_gelu``): the op computes
the projection (here on the CPU, where PyTorch runs the same GEMM then the same tanh GELU), Inductor calls it whole,
and the swapped modules keep diffusers' names and path wherever the fused one does not apply. The CUDA kernel's
speed and difference are bench/speed.py's (docs/performance.md)."""

from __future__ import annotations

import torch
import torch._dynamo
from diffusers.models.activations import GELU
from diffusers.models.attention import FeedForward
from torch import nn

from sgld.levers.fused_gelu import FusedGELU, fuse_gelu_projections, linear_gelu_tanh


def _reference(x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
    return nn.functional.gelu(nn.functional.linear(x, proj.weight, proj.bias), approximate="tanh")


def test_the_op_is_the_projection_then_the_tanh_gelu():
    """On the CPU the op is diffusers' two steps (PyTorch's fused CPU kernel would apply the erf GELU); the CUDA
    path's epilogue is checked on the device at install (``epilogue_gelu_is_tanh``, run by bench/speed.py)."""
    torch.manual_seed(0)
    proj = nn.Linear(24, 40)
    x = torch.randn(2, 7, 24)  # (batch, tokens, features): the op flattens and restores the leading dimensions
    got = linear_gelu_tanh(x, proj.weight, proj.bias)
    assert got.shape == (2, 7, 40)
    torch.testing.assert_close(got, _reference(x, proj), rtol=1e-5, atol=1e-5)


def test_inductor_calls_the_op_whole():
    """A custom op is opaque to Inductor: compiled, the graph still holds it (not a GEMM and a GELU kernel)."""
    torch.manual_seed(0)
    proj = nn.Linear(24, 40)
    x = torch.randn(5, 24)
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(graph_module, example_inputs)

    torch._dynamo.reset()
    try:
        with torch.no_grad():  # inference, as the denoise loop runs (the op has no backward)
            got = torch.compile(lambda t: linear_gelu_tanh(t, proj.weight, proj.bias), backend=backend,
                                fullgraph=True)(x)
    finally:
        torch._dynamo.reset()
    assert any("sgld.linear_gelu_tanh" in str(node.target) for g in graphs for node in g.graph.nodes)
    torch.testing.assert_close(got, _reference(x, proj), rtol=1e-5, atol=1e-5)


def test_swapped_modules_keep_names_and_fall_back_off_cuda_and_for_other_layers():
    torch.manual_seed(0)
    model = nn.ModuleDict({"ff": FeedForward(16, dim_out=16, activation_fn="gelu-approximate"),
                           "exact": FeedForward(16, dim_out=16, activation_fn="gelu")})
    names = model.state_dict().keys()
    x = torch.randn(3, 16)
    with torch.no_grad():
        want = model["ff"](x)
        assert fuse_gelu_projections(model, torch.device("cpu")) == 1  # the tanh one only: the exact GELU has no cuBLASLt epilogue here
        assert type(model["ff"].net[0]) is FusedGELU and type(model["exact"].net[0]) is GELU
        assert model.state_dict().keys() == names
        assert torch.equal(model["ff"](x), want)  # on the CPU: diffusers' own path



def test_a_plain_linear_takes_the_op_and_a_wrapped_one_keeps_diffusers_path(monkeypatch):
    """With the CPU counted as a fused device, the module calls the op for a plain Linear with a bias and keeps
    diffusers' path for anything else (a LoRA wrapper or quantized layer is a Linear subclass or another module)."""
    import sgld.levers.fused_gelu as fused_gelu

    class LoraLike(nn.Linear):
        pass

    torch.manual_seed(0)
    gelu = GELU(16, 64, approximate="tanh")
    fuse_gelu_projections(gelu, torch.device("cpu"))
    x = torch.randn(3, 16)
    calls = []
    monkeypatch.setattr(fused_gelu, "FUSED_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(fused_gelu, "linear_gelu_tanh", lambda *args: calls.append(args) or linear_gelu_tanh(*args))
    with torch.no_grad():
        torch.testing.assert_close(gelu(x), _reference(x, gelu.proj), rtol=1e-5, atol=1e-5)
        assert len(calls) == 1
        gelu.proj = LoraLike(16, 64)
        assert not fused_gelu.takes_fused_path(gelu.proj, x)
        torch.testing.assert_close(gelu(x), _reference(x, gelu.proj))
        assert not fused_gelu.takes_fused_path(nn.Linear(16, 64, bias=False), x)
        assert not fused_gelu.takes_fused_path(nn.Linear(16, 64), x.double())
    assert len(calls) == 1
