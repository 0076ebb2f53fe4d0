"""Every change sgld makes to diffusers' internals, in one place, checked against the version it was written for.

Each patch is inert until its feature runs: the log-sum-exp attention op answers only calls that ask
for the log-sum-exp (ring attention), the padded gather only serves sequence-parallel runs, and the
windowed dispatch only acts while a sliding-tile processor is active.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

log = logging.getLogger(__name__)

# The diffusers release these patches were written and tested against (pyproject pins it).
WRITTEN_FOR = "0.42.1"


def _patches() -> list[tuple[str, str, Callable[[Callable], Callable], str]]:
    """(module, attribute, wrap(original) -> replacement, what it is for)."""
    from sgld.levers.sliding_tile import windowed_dispatch
    from sgld.parallel.sequence import lse_attention_op, pad_gather_anything

    return [
        ("diffusers.models.attention_dispatch", "_native_attention_forward_op", lse_attention_op,
         "ring attention (the native op returns no log-sum-exp)"),
        ("diffusers.hooks.context_parallel", "_all_gather_anything", lambda original: pad_gather_anything,
         "sequence parallelism with uneven shards on gloo"),
        ("diffusers.models.transformers.transformer_hunyuan_video", "dispatch_attention_fn", windowed_dispatch,
         "sliding-tile attention for HunyuanVideo"),
    ]


def apply_diffusers_patches() -> None:
    """Install sgld's patches to diffusers' internals once per process.

    A diffusers other than WRITTEN_FOR gets a warning naming both versions; a patched name that is
    gone raises a RuntimeError saying which feature it serves, rather than failing later inside diffusers.
    """
    import diffusers

    if getattr(apply_diffusers_patches, "applied", False):
        return
    if diffusers.__version__ != WRITTEN_FOR:
        log.warning("sgld's patches to diffusers internals were written for diffusers %s; this is %s. "
                    "Sequence parallelism and sliding-tile attention may fail: install diffusers==%s",
                    WRITTEN_FOR, diffusers.__version__, WRITTEN_FOR)
    for module_name, attribute, wrap, purpose in _patches():
        module = importlib.import_module(module_name)
        original = getattr(module, attribute, None)
        if original is None:
            raise RuntimeError(f"diffusers {diffusers.__version__} has no {module_name}.{attribute}, which sgld "
                               f"patches for {purpose} (written for diffusers {WRITTEN_FOR})")
        setattr(module, attribute, wrap(original))
    _register_attention_backends()
    apply_diffusers_patches.applied = True


def _register_attention_backends() -> None:
    """Add sgld's attention backends to diffusers': FlashAttention-3 that hands masked calls to SDPA
    (``--attention-backend fa3``) and FA3's FP8 forward (``fa3_fp8``).

    diffusers names its backends in an Enum, which has no public way to grow: each new member goes into
    the Enum's member maps, which its value lookup and ``set_attention_backend``'s check read.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from sgld.levers import fa3_attention, fp8_attention

    for name, function in ((fa3_attention.BACKEND_NAME, fa3_attention.fa3_attention),
                           (fp8_attention.BACKEND_NAME, fp8_attention.fp8_attention)):
        if name not in AttentionBackendName._value2member_map_:
            member = str.__new__(AttentionBackendName, name)
            member._name_, member._value_ = name.upper(), name
            AttentionBackendName._member_map_[member._name_] = member
            AttentionBackendName._value2member_map_[name] = member
            AttentionBackendName._member_names_.append(member._name_)
        _AttentionBackendRegistry.register(AttentionBackendName(name))(function)
