"""The DiT's attention kernel: our --attention-backend choices, what auto picks, and fallbacks."""

from __future__ import annotations

import logging

import torch

from sgld.errors import UserError

log = logging.getLogger(__name__)

# diffusers' names for our --attention-backend choices.
ATTENTION_BACKENDS = {
    "sdpa": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
    "sage": "sage",
    "fa3": "sgld_fa3",  # diffusers' _flash_3, masked calls through SDPA (sgld.levers.fa3_attention)
    "fa3_fp8": "sgld_fa3_fp8",  # sgld.levers.fp8_attention, registered by sgld.diffusers_patches
}
# Backends from packages built from source (not on PyPI for every GPU/torch pair): where one cannot
# run, the run falls back to the default attention and says why. Package, minimum version, where to get it.
OPTIONAL_BACKENDS = {
    "sage": ("sageattention", "2.1.1", "build SageAttention2 from source (github.com/thu-ml/SageAttention; "
                                       "bench/build_sage.sh, see docs/performance.md)"),
    "fa3": ("flash_attn_3", None, "build FlashAttention-3 from source (github.com/Dao-AILab/flash-attention, "
                                  "hopper/; bench/build_fa3.sh, see docs/performance.md)"),
    "fa3_fp8": ("flash_attn_3", None, "build FlashAttention-3 with its FP8 forward from source "
                                      "(FA3_FP8=1 bash bench/build_fa3.sh, see docs/performance.md)"),
}


def compiles_fullgraph(backend: str) -> bool:
    """Whether the blocks compile as whole graphs with this attention backend.

    sageattn cannot be traced (measured, torch 2.11: "torch.* op returned non-Tensor"), so with
    sage each block compiles in pieces around its attention calls.
    """
    return backend != "sage"


def auto_attention_backend(device: torch.device, sp_size: int) -> str:
    """The measured default: FlashAttention-3 where it is installed and runs (Hopper, one sequence shard).

    On an H200 it beat cuDNN attention (what SDPA picks) at every shape our models run
    (bench/attention.py; the figures are in docs/performance.md). With sequence parallelism the ring/Ulysses
    paths keep their own verified kernels.
    """
    if sp_size == 1 and optional_backend_unavailable_reason("fa3", device) is None:
        log.info("attention_backend=auto: FlashAttention-3 is installed, using it")
        return "fa3"
    return "auto"


def set_attention_backend(module: torch.nn.Module, backend: str, device: torch.device) -> str:
    """Set the DiT's attention kernel; returns the backend in effect.

    An optional backend (sage, fa3, fa3_fp8) where it cannot run falls back to the default (``auto``), saying why.
    """
    if backend == "auto":
        return backend
    if backend in OPTIONAL_BACKENDS:
        reason = optional_backend_unavailable_reason(backend, device)
        if reason:
            log.warning("attention_backend=%r is not available here (%s); using the default attention", backend, reason)
            return "auto"
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend
    try:
        module.set_attention_backend(ATTENTION_BACKENDS[backend])
    except (ImportError, RuntimeError, ValueError) as exc:
        raise UserError(f"attention_backend={backend!r} cannot run here: {exc}", param="attention_backend") from None
    finally:
        # diffusers also makes it the process-wide default, which every other model in the process would then
        # run; the choice is this module's (its processors hold it; our families' all pass it explicitly).
        _AttentionBackendRegistry.set_active_backend(default)
    return backend


def optional_backend_unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why an optional attention backend (sage, fa3, fa3_fp8) cannot run on ``device`` (None: it can)."""
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
    if backend in ("fa3", "fa3_fp8") and torch.cuda.get_device_capability(device)[0] != 9:
        return "FlashAttention-3 runs on Hopper GPUs (compute capability 9.x) only"
    if backend == "fa3_fp8":
        from sgld.levers.fp8_attention import fa3_fp8_unavailable_reason

        index = device.index if device.index is not None else torch.cuda.current_device()
        return fa3_fp8_unavailable_reason(index)
    return None
