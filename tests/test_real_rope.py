"""Complex RoPE in real arithmetic (``sgld.levers.real_rope``, Qwen-Image's and Z-Image's): the same product as
diffusers' complex one, and one Inductor compiles (diffusers' complex multiply falls back to eager kernels). Its
speed is bench/speed.py's."""

from __future__ import annotations


import pytest
import torch
import torch._dynamo
from diffusers.models.transformers import transformer_qwenimage as qwen

from sgld.levers.real_rope import (RealRopeQwenProcessor, RealRopeZImageProcessor, _z_image_rope,
                                   apply_rotary_emb_qwen, rotate_pairs)

# The complex input's views (the rotations arrive as a complex tensor): no kernel, nothing for Inductor to fuse.
COMPLEX_VIEWS = {"aten.view_as_real.default", "aten.unsqueeze.default"}
REQUEST = dict(prompt="a red fox", height=64, width=64, num_inference_steps=2, seed=5, return_frames=True,
               save_output=False)


@pytest.fixture
def cold_inductor(monkeypatch):
    """Inductor lowers every graph afresh (a graph found in the on-disk cache, a previous test run's, is not
    lowered), and each node it leaves to eager for its complex tensors is recorded: the yielded set holds their
    operators. Recorded rather than read from Inductor's warning, which it prints once a process."""
    import torch._inductor.config as inductor
    import torch._inductor.graph as graph

    complex_fallbacks: set[str] = set()
    check = graph.fallback_node_due_to_unsupported_type

    def recording(node, *args, **kwargs):
        falls_back = check(node, *args, **kwargs)
        values = [getattr(arg, "meta", {}).get("val") for arg in (*node.all_input_nodes, node)]
        if falls_back and any(isinstance(v, torch.Tensor) and v.is_complex() for v in values):
            complex_fallbacks.add(str(node.target))
        return falls_back

    monkeypatch.setattr(graph, "fallback_node_due_to_unsupported_type", recording)
    torch._dynamo.reset()
    with inductor.patch(fx_graph_cache=False, autotune_local_cache=False):
        yield complex_fallbacks
    torch._dynamo.reset()


def _inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, H, D) queries and the (S, D/2) unit complex rotations diffusers' Qwen-Image RoPE passes."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, 16, generator=generator).to(dtype)
    angles = torch.rand(7, 8, generator=generator, dtype=torch.float64) * 100
    return x, torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def _close_in(dtype: torch.dtype, got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to fp32 rounding: within 2e-6 in fp32; in bf16, the fp32 results round alike but for a last bit
    where they straddle a rounding boundary."""
    assert got.dtype == want.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    else:
        assert (got.float() - want.float()).abs().max() <= want.float().abs().max() * 2 ** -8
        assert (got == want).float().mean() > 0.98


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_real_rotation_is_the_complex_product(dtype):
    x, freqs = _inputs(dtype)
    _close_in(dtype, rotate_pairs(x, freqs.unsqueeze(1)), qwen.apply_rotary_emb_qwen(x, freqs, use_real=False))
    # Eager, each family's function is diffusers' own arithmetic (Z-Image's: its freqs per sample, (B, S, D/2)).
    assert torch.equal(apply_rotary_emb_qwen(x, freqs), qwen.apply_rotary_emb_qwen(x, freqs, use_real=False))
    per_sample = freqs.expand(2, -1, -1)
    assert torch.equal(_z_image_rope(x, per_sample), qwen.apply_rotary_emb_qwen(x, freqs, use_real=False))
    _close_in(dtype, rotate_pairs(x, per_sample.unsqueeze(2)), _z_image_rope(x, per_sample))


def test_inductor_compiles_the_real_rotation_and_not_the_complex_one(cold_inductor):
    x, freqs = _inputs(torch.bfloat16)

    def compile_and_run(function) -> tuple[torch.Tensor, set[str]]:
        torch._dynamo.reset()
        cold_inductor.clear()
        out = torch.compile(function, fullgraph=True)(x, freqs)
        return out, set(cold_inductor)

    _, complex_ops = compile_and_run(lambda x, f: qwen.apply_rotary_emb_qwen(x, f, use_real=False))
    assert "aten.mul.Tensor" in complex_ops  # what the lever is for: the complex product runs eagerly
    fused, real_ops = compile_and_run(apply_rotary_emb_qwen)
    assert real_ops <= COMPLEX_VIEWS, real_ops
    _close_in(torch.bfloat16, fused, qwen.apply_rotary_emb_qwen(x, freqs, use_real=False))


def test_a_compiled_qwen_image_run_fuses_the_rope_and_equals_the_eager_one(generators, cold_inductor):
    """Qwen-Image's pipelines install the processor; eager it is diffusers' arithmetic (the parity tests compare it
    with the reference), and --enable-torch-compile (regional, fullgraph) traces it whole, the complex input only
    viewed, within 2/255 of eager."""
    from sgld import DiffGenerator

    eager_generator = generators("tiny-qwen-image")
    transformer = eager_generator.pipeline.components["transformer"]
    assert all(type(block.attn.processor) is RealRopeQwenProcessor for block in transformer.transformer_blocks)
    eager = eager_generator.generate(**REQUEST).frames
    compiled = DiffGenerator.from_pretrained("tiny-qwen-image", enable_torch_compile=True).generate(**REQUEST)
    assert cold_inductor and cold_inductor <= COMPLEX_VIEWS, cold_inductor  # compiled, the product fused
    difference = abs(compiled.frames.astype(int) - eager.astype(int)).max()
    assert difference <= 2, f"compiled against eager: {difference}/255"


def test_z_image_attention_compiles_with_the_real_rope(generators, cold_inductor):
    """Z-Image's pipelines install their processor (diffusers' restated); one block's attention, compiled whole,
    leaves only views of the complex input to eager and matches diffusers' processor run eagerly on the same module."""
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    transformer = generators("tiny-z-image").pipeline.components["transformer"]
    blocks = [*transformer.noise_refiner, *transformer.context_refiner, *transformer.layers]
    assert all(type(block.attention.processor) is RealRopeZImageProcessor for block in blocks)
    attention = blocks[0].attention
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 12, attention.to_q.in_features, generator=generator)
    angles = torch.rand(1, 12, attention.to_q.out_features // attention.heads // 2, generator=generator) * 50
    freqs = torch.polar(torch.ones_like(angles), angles)
    with torch.no_grad():
        want = ZSingleStreamAttnProcessor()(attention, hidden, freqs_cis=freqs)
        assert torch.equal(attention(hidden, freqs_cis=freqs), want)  # eager: diffusers' arithmetic
        got = torch.compile(attention, fullgraph=True)(hidden, freqs_cis=freqs)
    assert cold_inductor <= COMPLEX_VIEWS, cold_inductor
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_norm_and_rope_op_is_diffusers_norm_then_rotation():
    """``sgld::qk_norm_rope`` off CUDA (its PyTorch form; the Triton kernel's exactness on a GPU is
    bench/qk_norm_rope.py's): diffusers' RMSNorm, then the complex product, within one bf16 rounding."""
    from diffusers.models.normalization import RMSNorm

    from sgld.levers.qk_norm_rope import qk_norm_rope

    x, freqs = _inputs(torch.bfloat16)
    norm = RMSNorm(16, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
        want = qwen.apply_rotary_emb_qwen(norm(x), freqs, use_real=False)
        got = qk_norm_rope(x, norm.weight, torch.view_as_real(freqs), norm.eps)
    _close_in(torch.bfloat16, got, want)


def test_a_compiled_qwen_attention_with_the_fused_norm_and_rope(cold_inductor, monkeypatch):
    """With the CPU counted as a fused device, a compiled Qwen-Image block's attention calls ``sgld::qk_norm_rope``
    for its four QK tensors (the op's PyTorch form here) and equals diffusers' processor run eagerly."""
    import sgld.levers.real_rope as real_rope
    from sgld.levers.real_rope import use_real_rope
    from tests.support.tiny_dits import tiny_qwen_image_dit

    dit = tiny_qwen_image_dit(num_layers=1)
    use_real_rope(dit)
    attention = dit.transformer_blocks[0].attn
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(1, 16, 32, generator=generator), torch.randn(1, 5, 32, generator=generator)
    rotary = dit.pos_embed([[(1, 4, 4)]], max_txt_seq_len=5, device=torch.device("cpu"))
    calls = []
    original = real_rope.qk_norm_rope
    monkeypatch.setattr(real_rope, "FUSED_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(real_rope, "qk_norm_rope", lambda *args: calls.append(args[0].shape) or original(*args))
    with torch.no_grad():
        want = qwen.QwenDoubleStreamAttnProcessor2_0()(attention, image, text, image_rotary_emb=rotary)
        got = torch.compile(attention, fullgraph=True)(image, text, image_rotary_emb=rotary)
    assert len(calls) == 4  # traced once: image and text queries and keys
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
