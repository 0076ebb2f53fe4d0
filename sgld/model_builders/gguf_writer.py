"""GGUF files of a DiT made here (tests, ``bench/gguf.py``): its weights, quantized, under the names the community files use.

diffusers' GGUF loader takes the released checkpoint's tensor names (Wan's, FLUX's BFL names,
Z-Image's) and turns them into its own with the class's single-file converter
(``diffusers.loaders.single_file_utils``); ``original_state_dict`` is the inverse of those converters,
checked by running the converter on meta tensors (``check_round_trip``). A file may also hold
diffusers' own names, which the loader takes unconverted (``names="diffusers"``).

Quantization follows the GGML block layouts: Q8_0 exactly as the ``gguf`` package's reference
quantizer (bit-exact, tested), Q4_K — which the package can dequantize but not quantize — with
min/max scales per 32-value sub-block (no llama.cpp-style scale search: a little less accurate,
the same layout). Both run in torch, so a 14B DiT quantizes on the GPU in seconds. A linear weight
whose rows do not hold whole blocks falls back to Q8_0 (rows of 32), else stays F32, as llama.cpp's
converters fall back; every other tensor (biases, norms, convolutions) is written F32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch

from sgld.errors import UserError

# GGML block sizes (values per block, bytes per block): gguf.GGML_QUANT_SIZES, without importing gguf here.
BLOCKS = {"Q8_0": (32, 34), "Q4_K": (256, 144)}
QUANT_TYPES = tuple(BLOCKS)
# The short architecture name written as general.architecture (what ComfyUI-GGUF files say), per DiT class.
ARCHITECTURES = {
    "WanTransformer3DModel": "wan", "FluxTransformer2DModel": "flux", "ZImageTransformer2DModel": "lumina2",
    "QwenImageTransformer2DModel": "qwen_image", "HunyuanVideoTransformer3DModel": "hyvid",
    "Flux2Transformer2DModel": "flux2",
}


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero, in the gguf package's own arithmetic (np_roundf), so Q8_0 matches it bit for bit."""
    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def quantize_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """Rows of 32-value blocks: an fp16 scale (max |x| / 127) and 32 int8 values each -> uint8 (rows, cols / 32 * 34)."""
    rows = weight.shape[0]
    blocks = weight.float().reshape(-1, 32)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    qs = _roundf(blocks * inverse).to(torch.int8).view(torch.uint8)
    scale = d.to(torch.float16).view(torch.uint8)
    return torch.cat([scale, qs], dim=1).reshape(rows, -1)


def quantize_q4_k(weight: torch.Tensor) -> torch.Tensor:
    """Super-blocks of 256 values: fp16 d and dmin, eight 6-bit (scale, min) pairs, 4-bit values -> uint8 (rows, cols / 256 * 144).

    A value decodes as ``d * scale_j * q - dmin * min_j`` (q in 0..15) for its 32-value sub-block j.
    """
    rows = weight.shape[0]
    blocks = weight.float().reshape(-1, 8, 32)
    low = blocks.amin(dim=-1).clamp(max=0)
    step = (blocks.amax(dim=-1) - low) / 15  # (n, 8): each sub-block's value step
    offset = -low
    d = (step.amax(dim=-1, keepdim=True) / 63).to(torch.float16)
    dmin = (offset.amax(dim=-1, keepdim=True) / 63).to(torch.float16)
    d32, dmin32 = d.float(), dmin.float()
    scales = torch.where(d32 > 0, torch.round(step / d32.clamp(min=1e-30)), 0).clamp(0, 63)
    mins = torch.where(dmin32 > 0, torch.round(offset / dmin32.clamp(min=1e-30)), 0).clamp(0, 63)
    unit, shift = (d32 * scales).unsqueeze(-1), (dmin32 * mins).unsqueeze(-1)
    q = torch.where(unit > 0, torch.round((blocks + shift) / unit.clamp(min=1e-30)), 0).clamp(0, 15).to(torch.uint8)
    sc, mn = scales.to(torch.uint8), mins.to(torch.uint8)
    # The 12-byte packing gguf's Q4_K.get_scale_min unpacks: low 6 bits of the first four, the rest split.
    packed = torch.cat([(sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6), (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6),
                        (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)], dim=1)
    q = q.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)  # sub-blocks 2i (low nibbles) and 2i+1 (high)
    out = torch.cat([d.view(torch.uint8), dmin.view(torch.uint8), packed, qs], dim=1)
    return out.reshape(rows, -1)


QUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"Q8_0": quantize_q8_0, "Q4_K": quantize_q4_k}


def tensor_type(qtype: str, shape: tuple[int, ...], linear: bool) -> str:
    """What a tensor of ``shape`` is written as: ``qtype`` for a linear weight whose rows hold whole blocks, Q8_0 as a fallback, else F32."""
    if not linear or len(shape) != 2:
        return "F32"
    for candidate in (qtype, "Q8_0"):
        if shape[1] % BLOCKS[candidate][0] == 0:
            return candidate
    return "F32"


# --- names: diffusers' -> the original checkpoint's (the inverse of diffusers' single-file converters) ---

_WAN_RENAMES = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."), (".add_v_proj.", ".v_img."), (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
)


def _wan_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's original names (``convert_wan_transformer_to_diffusers`` renames only)."""
    out = {}
    for key, tensor in state.items():
        new = key
        for ours, theirs in _WAN_RENAMES:
            new = new.replace(ours, theirs)
        if new.startswith("proj_out."):
            new = "head.head." + new.removeprefix("proj_out.")
        elif new == "scale_shift_table":
            new = "head.modulation"
        elif new.startswith("blocks."):
            # diffusers' norm2 is the original's norm3 and the other way round (its converter swaps them).
            head, _, rest = new.partition(".")
            index, _, rest = rest.partition(".")
            rest = {"norm2": "norm3", "norm3": "norm2"}.get(rest.split(".")[0], rest.split(".")[0]) + rest[len(rest.split(".")[0]):]
            rest = rest.replace("scale_shift_table", "modulation")
            new = f"{head}.{index}.{rest}"
        out[new] = tensor
    return out


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _flux_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FLUX.1's BFL names (the inverse of ``convert_flux_transformer_checkpoint_to_diffusers``: q, k, v fused)."""
    s = dict(state)
    out: dict[str, torch.Tensor] = {}

    def move(ours: str, theirs: str) -> None:
        for suffix in ("weight", "bias"):
            if f"{ours}.{suffix}" in s:
                out[f"{theirs}.{suffix}"] = s.pop(f"{ours}.{suffix}")

    def fuse(parts: list[str], theirs: str) -> None:
        for suffix in ("weight", "bias"):
            out[f"{theirs}.{suffix}"] = torch.cat([s.pop(f"{p}.{suffix}") for p in parts], dim=0)

    for ours, theirs in (("time_text_embed.timestep_embedder", "time_in"), ("time_text_embed.text_embedder", "vector_in"),
                         ("time_text_embed.guidance_embedder", "guidance_in")):
        move(f"{ours}.linear_1", f"{theirs}.in_layer")
        move(f"{ours}.linear_2", f"{theirs}.out_layer")
    move("context_embedder", "txt_in")
    move("x_embedder", "img_in")
    doubles = sorted({int(k.split(".")[1]) for k in s if k.startswith("transformer_blocks.")})
    for i in doubles:
        b, o = f"transformer_blocks.{i}", f"double_blocks.{i}"
        move(f"{b}.norm1.linear", f"{o}.img_mod.lin")
        move(f"{b}.norm1_context.linear", f"{o}.txt_mod.lin")
        fuse([f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v"], f"{o}.img_attn.qkv")
        fuse([f"{b}.attn.add_q_proj", f"{b}.attn.add_k_proj", f"{b}.attn.add_v_proj"], f"{o}.txt_attn.qkv")
        for ours, theirs in (("norm_q", "img_attn.norm.query_norm"), ("norm_k", "img_attn.norm.key_norm"),
                             ("norm_added_q", "txt_attn.norm.query_norm"), ("norm_added_k", "txt_attn.norm.key_norm")):
            out[f"{o}.{theirs}.scale"] = s.pop(f"{b}.attn.{ours}.weight")
        move(f"{b}.ff.net.0.proj", f"{o}.img_mlp.0")
        move(f"{b}.ff.net.2", f"{o}.img_mlp.2")
        move(f"{b}.ff_context.net.0.proj", f"{o}.txt_mlp.0")
        move(f"{b}.ff_context.net.2", f"{o}.txt_mlp.2")
        move(f"{b}.attn.to_out.0", f"{o}.img_attn.proj")
        move(f"{b}.attn.to_add_out", f"{o}.txt_attn.proj")
    singles = sorted({int(k.split(".")[1]) for k in s if k.startswith("single_transformer_blocks.")})
    for i in singles:
        b, o = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        move(f"{b}.norm.linear", f"{o}.modulation.lin")
        fuse([f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v", f"{b}.proj_mlp"], f"{o}.linear1")
        out[f"{o}.norm.query_norm.scale"] = s.pop(f"{b}.attn.norm_q.weight")
        out[f"{o}.norm.key_norm.scale"] = s.pop(f"{b}.attn.norm_k.weight")
        move(f"{b}.proj_out", f"{o}.linear2")
    move("proj_out", "final_layer.linear")
    for suffix in ("weight", "bias"):  # BFL's final modulation is (shift, scale); diffusers' (scale, shift)
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = _swap_halves(s.pop(f"norm_out.linear.{suffix}"))
    if s:
        raise ValueError(f"FLUX tensors without a BFL name: {sorted(s)[:5]}")
    return out


_Z_IMAGE_RENAMES = (
    ("all_final_layer.2-1.", "final_layer."), ("all_x_embedder.2-1.", "x_embedder."),
    (".attention.to_out.0.", ".attention.out."), (".attention.norm_k.", ".attention.k_norm."),
    (".attention.norm_q.", ".attention.q_norm."),
)


def _z_image_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Z-Image's original names (``convert_z_image_transformer_checkpoint_to_diffusers``: q, k, v fused)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q.weight" in key:
            parts = [state[key.replace("to_q", name)] for name in ("to_q", "to_k", "to_v")]
            out[key.replace(".attention.to_q.weight", ".attention.qkv.weight")] = torch.cat(parts, dim=0)
            continue
        new = key
        for ours, theirs in _Z_IMAGE_RENAMES:
            new = new.replace(ours, theirs)
        out[new] = tensor
    return out


# DiT class -> diffusers names to the original checkpoint's (the names community GGUF files hold).
ORIGINAL_NAMES: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "WanTransformer3DModel": _wan_names,
    "FluxTransformer2DModel": _flux_names,
    "ZImageTransformer2DModel": _z_image_names,
    "QwenImageTransformer2DModel": dict,  # its converter is the identity: the files hold diffusers' names
}


def original_state_dict(class_name: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (diffusers names) under the original checkpoint's names, as community GGUF files hold them."""
    if class_name not in ORIGINAL_NAMES:
        raise UserError(f"no original tensor names known for {class_name} (known: {', '.join(ORIGINAL_NAMES)}); "
                        "write it with names='diffusers'", param="names")
    return ORIGINAL_NAMES[class_name](state)


def check_round_trip(class_name: str, state: Mapping[str, torch.Tensor], config: Mapping) -> None:
    """diffusers' converter turns ``original_state_dict(state)`` back into ``state``'s names and shapes (on meta tensors)."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    meta = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    convert = SINGLE_FILE_LOADABLE_CLASSES[class_name]["checkpoint_mapping_fn"]
    back = convert(checkpoint=original_state_dict(class_name, meta), config=dict(config))
    want = {k: tuple(v.shape) for k, v in meta.items()}
    got = {k: tuple(v.shape) for k, v in back.items()}
    if got != want:
        wrong = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise ValueError(f"{class_name}: original names do not convert back (e.g. {wrong[:4]})")


def linear_weights(module: torch.nn.Module) -> set[str]:
    """State-dict names of the weights of ``module``'s linear layers (the tensors GGUF quantizes)."""
    return {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}


def write_dit_gguf(module: torch.nn.Module, path: Path, qtype: str, names: str = "original",
                   device: torch.device | None = None) -> dict[str, int]:
    """Write ``module``'s weights to ``path`` as GGUF: linear weights in ``qtype``, the rest F32; the tensor count per type.

    ``names``: ``original`` (the released checkpoint's, as community files; checked to convert back)
    or ``diffusers`` (taken as they are by the loader). ``device``: where each tensor is quantized (a GPU
    quantizes a 14B DiT in seconds); default where it lies.
    """
    import gguf

    if qtype not in QUANTIZERS:
        raise UserError(f"quantization {qtype!r} is not one sgld writes ({', '.join(QUANTIZERS)})", param="qtype")
    class_name = type(module).__name__
    state = {k: v.detach() for k, v in module.state_dict().items()}
    linear = linear_weights(module)
    if names == "original":
        check_round_trip(class_name, state, module.config)
        # A flag per tensor, renamed (and fused) the same way: a fused tensor (FLUX's qkv) is linear when its parts are.
        flags = {k: torch.full((2,), float(k in linear)) for k in state}
        linear_flags = {k: bool(v.min()) for k, v in original_state_dict(class_name, flags).items()}
        state = original_state_dict(class_name, state)
    else:
        linear_flags = {k: k in linear for k in state}
    writer = gguf.GGUFWriter(str(path), arch=ARCHITECTURES.get(class_name, class_name))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_Q4_K_M)
    counts: dict[str, int] = {}
    for name, tensor in state.items():
        kind = tensor_type(qtype, tuple(tensor.shape), linear_flags[name])
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "F32":
            writer.add_tensor(name, tensor.float().cpu().numpy())
        else:
            data = QUANTIZERS[kind](tensor.to(device) if device is not None else tensor).cpu().numpy()
            writer.add_tensor(name, data, raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts

