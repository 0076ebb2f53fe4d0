"""Load a diffusers-layout folder's components (safetensors only) and place them on devices."""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.registry import read_model_index

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# diffusers' names for our --attention-backend choices.
ATTENTION_BACKENDS = {
    "sdpa": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
    "sage": "sage",
    "fa3": "_flash_3",
}
# Backends from packages built from source (not on PyPI for every GPU/torch pair): where one cannot
# run, the run falls back to the default attention and says why. Package, minimum version, where to get it.
OPTIONAL_BACKENDS = {
    "sage": ("sageattention", "2.1.1", "build SageAttention2 from source (github.com/thu-ml/SageAttention; "
                                       "bench/build_sage.sh, see docs/performance.md)"),
    "fa3": ("flash_attn_3", None, "build FlashAttention-3 from source (github.com/Dao-AILab/flash-attention, "
                                  "hopper/; bench/build_fa3.sh, see docs/performance.md)"),
}


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a torch device (auto, cpu, cuda, cuda:1)", param="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} asked for, but no CUDA GPU is available here", param="device")
    return device


def _component_specs(index: dict) -> list[tuple[str, str, str]]:
    """(name, library, class) for every component entry of model_index.json that is present."""
    specs = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2:
            continue
        library, class_name = spec
        if library is None or class_name is None:
            continue
        specs.append((name, library, class_name))
    return specs


def _component_dtype(name: str, run: RunConfig, text_encoders: list[str]) -> torch.dtype | None:
    if name.startswith("transformer"):
        return DTYPES[run.model.precision]
    if name == "vae":
        return DTYPES[run.vae.precision]
    if name == "image_encoder":
        return DTYPES[run.model.image_encoder_precision]
    if name in text_encoders:
        precisions = run.model.text_encoder_precisions
        i = text_encoders.index(name)
        return DTYPES[precisions[i] if precisions else run.model.precision]
    return None


def load_components(folder: Path, run: RunConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Instantiate every component of ``folder`` with the run's precisions (on the CPU).

    Weights load from safetensors only; a folder with only pickle weights fails to load.
    A ``random:`` model's folder has configs only: its weights are made on ``device``
    (components the run offloads then move to the CPU).
    Non-component entries of model_index.json (``boundary_ratio`` ...) are returned too.
    """
    from sgld.models.random_weights import build_random_module, is_random_folder

    index = read_model_index(folder)
    random_weights = is_random_folder(folder)
    if random_weights:
        from sgld.pipelines.base import Pipeline

        offloaded = Pipeline.offloaded_components(run) | Pipeline.layerwise_components(run)
    specs = _component_specs(index)
    text_encoders = [name for name, _, _ in specs if name.startswith("text_encoder")]
    if run.model.text_encoder_precisions and len(run.model.text_encoder_precisions) != len(text_encoders):
        raise UserError(
            f"model.text_encoder_precisions has {len(run.model.text_encoder_precisions)} entries but "
            f"{folder.name} has {len(text_encoders)} text encoder(s) ({', '.join(text_encoders)})",
            param="text_encoder_precisions",
        )
    components: dict[str, Any] = {k: v for k, v in index.items() if not isinstance(v, list) and not k.startswith("_")}
    for name, library, class_name in specs:
        if library not in ("diffusers", "transformers"):
            raise UserError(f"component {name!r} comes from {library!r}; sgld loads diffusers/transformers only")
        cls = getattr(importlib.import_module(library), class_name)
        dtype = _component_dtype(name, run, text_encoders)
        sub = folder / name
        if not sub.is_dir():
            raise UserError(f"model folder {folder} lists component {name!r} but has no {name}/ folder")
        if dtype is not None and random_weights:
            target = device or torch.device("cpu")
            module = build_random_module(library, cls, sub, dtype, target, seed=len(components))
            if name in offloaded and target.type != "cpu":
                module.to("cpu")
        elif dtype is not None:
            require_safetensors(sub)
            if library == "diffusers":
                module = cls.from_pretrained(folder, subfolder=name, torch_dtype=dtype, use_safetensors=True)
            else:
                module = cls.from_pretrained(sub, dtype=dtype, use_safetensors=True)
            module.eval().requires_grad_(False)
        elif library == "diffusers":  # scheduler
            module = cls.from_pretrained(folder, subfolder=name)
        elif class_name == "Qwen2VLProcessor":
            from sgld.models.processors import load_qwen2vl_processor

            module = load_qwen2vl_processor(sub)
        else:  # tokenizer / processor
            module = cls.from_pretrained(sub)
        components[name] = module
    for name, spec in index.items():
        if isinstance(spec, list) and name not in components:
            components[name] = None
    return components


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(component: Path) -> None:
    """Refuse a weights folder without safetensors files before any loader can fall back to unpickling."""
    if any(component.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in component.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f"only pickle weights ({', '.join(pickled)})" if pickled else "no .safetensors weights"
    raise UserError(
        f"{component} has {found}; sgld loads safetensors only, because unpickling can run arbitrary code. "
        "Convert the checkpoint to safetensors (safetensors.torch.save_file) or use the model's safetensors release",
        param="model_path",
    )


class Placement:
    """Keeps each module where the offload settings say, and brings it in for its stage.

    ``layerwise`` modules stay on the CPU block by block: diffusers' group offloading
    copies each block in just before it runs (on CUDA: from pinned memory on a side
    stream, prefetching the next block while this one computes) and drops it after.
    """

    def __init__(self, device: torch.device, offloaded: set[str], pin_memory: bool = False,
                 layerwise: set[str] | None = None):
        self.device = device
        self.offloaded = offloaded if device.type != "cpu" else set()
        self.pin_memory = pin_memory and device.type == "cuda"
        self.layerwise = layerwise or set()

    def home(self, name: str) -> torch.device:
        """Where ``name`` lives between its uses."""
        return torch.device("cpu") if name in self.offloaded or name in self.layerwise else self.device

    def place(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Move ``module`` to its home; pin it when it waits on the CPU and pinning is on."""
        if name in self.layerwise:
            cuda = self.device.type == "cuda"
            module.to("cpu")
            module.enable_group_offload(onload_device=self.device, offload_device=torch.device("cpu"),
                                        offload_type="block_level", num_blocks_per_group=1, non_blocking=cuda,
                                        use_stream=cuda, record_stream=cuda)
            return module
        module.to(self.home(name))
        if name in self.offloaded and self.pin_memory:
            for p in module.parameters():
                p.data = p.data.pin_memory()
        return module

    @contextmanager
    def active(self, name: str, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Run ``module`` on the device for the duration of the block, then send it home."""
        if name not in self.offloaded:
            yield module
            return
        module.to(self.device, non_blocking=self.pin_memory)
        try:
            yield module
        finally:
            module.to("cpu")


def configure_transformer(module: torch.nn.Module, run: RunConfig, device: torch.device,
                          attention_mask: bool = False) -> None:
    """Quantization, attention backend, step cache, sliding tiles and regional compile, as the run asks.

    ``attention_mask``: the model's attention takes a mask (HunyuanVideo's text padding), so
    ``auto`` keeps SDPA (the family refused explicit mask-less backends before loading).
    """
    if run.model.quantization == "fp8":
        from sgld.models.fp8 import fp8_matmul_supported, quantize_blocks_fp8

        count = quantize_blocks_fp8(module, device)
        how = "FP8 tensor cores" if fp8_matmul_supported(device) else "dequantized matmuls (no FP8 tensor cores here)"
        log.info("quantization=fp8: %d linear layers of %s in e4m3, run with %s", count, type(module).__name__, how)
    backend = run.model.attention_backend
    if backend == "auto" and not attention_mask:
        backend = auto_attention_backend(device, run.parallel.sp_size or 1)
    backend = set_attention_backend(module, backend, device)
    if run.model.cache != "none":
        enable_step_cache(module, run.model.cache, run.model.cache_threshold)
    if run.model.mask_strategy_file_path:
        from sgld.models.sliding_tile import enable_sliding_tile_attention

        enable_sliding_tile_attention(module, run.model.mask_strategy_file_path)
    if run.model.enable_torch_compile:
        module.compile_repeated_blocks(fullgraph=compiles_fullgraph(backend))


def compiles_fullgraph(backend: str) -> bool:
    """Whether the blocks compile as whole graphs with this attention backend.

    sageattn cannot be traced (measured, torch 2.11: "torch.* op returned non-Tensor"), so with
    sage each block compiles in pieces around its attention calls.
    """
    return backend != "sage"


def auto_attention_backend(device: torch.device, sp_size: int) -> str:
    """The measured default: FlashAttention-3 where it is installed and runs (Hopper, one sequence shard).

    On an H200 it beat cuDNN attention (what SDPA picks) at every shape our models run:
    684 vs 570 TFLOP/s at Wan 480p, 695 vs 647 FLUX 1024², 718 vs 605 Qwen-Image 1024²
    (bench/attention.py, docs/performance.md). With sequence parallelism the ring/Ulysses
    paths keep their own verified kernels.
    """
    if sp_size == 1 and optional_backend_unavailable_reason("fa3", device) is None:
        log.info("attention_backend=auto: FlashAttention-3 is installed, using it")
        return "fa3"
    return "auto"


def set_attention_backend(module: torch.nn.Module, backend: str, device: torch.device) -> str:
    """Set the DiT's attention kernel; returns the backend in effect.

    An optional backend (sage, fa3) where it cannot run falls back to the default (``auto``), saying why.
    """
    if backend == "auto":
        return backend
    if backend in OPTIONAL_BACKENDS:
        reason = optional_backend_unavailable_reason(backend, device)
        if reason:
            log.warning("attention_backend=%r is not available here (%s); using the default attention", backend, reason)
            return "auto"
    try:
        module.set_attention_backend(ATTENTION_BACKENDS[backend])
    except (ImportError, RuntimeError, ValueError) as exc:
        raise UserError(f"attention_backend={backend!r} cannot run here: {exc}", param="attention_backend") from None
    return backend


def optional_backend_unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why an optional attention backend (sage, fa3) cannot run on ``device`` (None: it can)."""
    import importlib.metadata

    from packaging.version import Version

    package, minimum, how = OPTIONAL_BACKENDS[backend]
    if device.type != "cuda":
        return f"it needs a CUDA GPU, this run is on {device.type}"
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return f"the {package} package is not installed; {how}"
    if minimum and Version(version) < Version(minimum):
        return f"{package} {version} is older than {minimum}"
    if backend == "fa3" and torch.cuda.get_device_capability(device)[0] != 9:
        return "FlashAttention-3 runs on Hopper GPUs (compute capability 9.x) only"
    return None


def enable_step_cache(module: torch.nn.Module, kind: str, threshold: float) -> None:
    """Install diffusers' step-cache hooks on a DiT (the denoise loop names each branch's cache context)."""
    from diffusers import FirstBlockCacheConfig

    if kind != "first_block":
        raise UserError(f"cache={kind!r} is not available; use first_block", param="cache")
    config = FirstBlockCacheConfig(threshold=threshold)
    try:
        module.enable_cache(config)
    except (ValueError, AttributeError) as exc:
        raise UserError(f"cache={kind!r} is not available for {type(module).__name__}: {exc}", param="cache") from None


def enable_vae_tiling(vae: torch.nn.Module, tile_height: int | None, tile_width: int | None) -> None:
    """Tiled VAE decode; strides follow the tile size (3/4 of it, diffusers' 192/256 ratio).

    diffusers keeps its default 192-pixel stride whatever the tile size, so a tile smaller
    than that would skip parts of the image.
    """
    import inspect

    if "tile_sample_min_height" not in inspect.signature(vae.enable_tiling).parameters:
        if tile_height is not None or tile_width is not None:
            raise UserError(
                f"{type(vae).__name__} tiles at its own size; leave tile_sample_min_height/width unset",
                param="vae_config",
            )
        vae.enable_tiling()
        return
    kwargs = {}
    if tile_height is not None:
        kwargs.update(tile_sample_min_height=tile_height, tile_sample_stride_height=tile_height * 3 // 4)
    if tile_width is not None:
        kwargs.update(tile_sample_min_width=tile_width, tile_sample_stride_width=tile_width * 3 // 4)
    vae.enable_tiling(**kwargs)
