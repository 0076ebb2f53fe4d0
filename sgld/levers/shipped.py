"""A DiT that sgld configured, run for a while as diffusers ships it: the yardstick benchmarks measure against.

sgld configures a DiT in place when it loads (``sgld.levers.transformer_setup``): some modules change class
(``FusedGELU`` for diffusers' tanh ``GELU``, ``ModulationSlot`` for Qwen-Image's block modulations), some attention
processors are replaced by subclasses (``sgld.levers.real_rope``: Qwen-Image's and Z-Image's RoPE in real
arithmetic, with the fused QK norm + RoPE kernel; ``sgld.levers.hunyuan15_attention``: HunyuanVideo-1.5's attention
without its dense mask), a forward hook shares Qwen-Image's modulations, and an attention
backend may be set. A benchmark's "diffusers" rows run diffusers' pipelines on those same component objects (there
is no room on one GPU for a second copy of a 20B DiT), so without this they would measure diffusers with sgld's
levers in it. Inside ``as_shipped`` every one of those is diffusers' own again; on leaving, sgld's are back.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from torch import nn


def sgld_classes() -> dict[type, type]:
    """Each class sgld swaps into a DiT, and the diffusers class it stands for."""
    from diffusers.models.activations import GELU
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0

    from sgld.levers.fused_gelu import FusedGELU
    from sgld.levers.hunyuan15_attention import MaskFreeHunyuan15Processor
    from sgld.levers.real_rope import REPLACEMENTS
    from sgld.levers.shared_modulation import ModulationSlot

    return {FusedGELU: GELU, ModulationSlot: nn.Sequential, MaskFreeHunyuan15Processor: HunyuanVideo15AttnProcessor2_0,
            **{ours: theirs for theirs, ours in REPLACEMENTS.items()}}


@contextmanager
def as_shipped(transformer: nn.Module) -> Iterator[int]:
    """``transformer`` as diffusers builds it for the duration: sgld's module and processor classes swapped back
    (weights, children and names untouched), sgld's forward hooks on its submodules paused, and every attention
    processor on diffusers' default backend. Yields how many modules and processors were swapped."""
    from sgld.levers.shared_modulation import SharedModulation

    swaps = sgld_classes()
    swapped: list[tuple[object, type]] = []
    backends: list[tuple[object, object]] = []
    paused: list[tuple[nn.Module, int, object]] = []
    seen: set[int] = set()  # one processor object may serve many attention modules
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        for obj in (module, processor):
            if obj is not None and id(obj) not in seen:
                seen.add(id(obj))
                if type(obj) in swaps:
                    swapped.append((obj, type(obj)))
                if obj is processor and "_attention_backend" in vars(processor):
                    backends.append((processor, vars(processor)["_attention_backend"]))
        paused += [(module, key, hook) for key, hook in module._forward_hooks.items()
                   if isinstance(getattr(hook, "__self__", None), SharedModulation)]
    try:
        for module, key, _ in paused:
            del module._forward_hooks[key]
        for obj, cls in swapped:
            obj.__class__ = swaps[cls]
        for processor, _ in backends:
            del processor._attention_backend  # the class attribute: diffusers' default backend
        left = sorted({f"{type(obj).__module__}.{type(obj).__qualname__}" for module in transformer.modules()
                       for obj in (module, getattr(module, "processor", None))
                       if type(obj).__module__.split(".")[0] == "sgld"})
        if left:  # a lever that swaps a class must say what it stands for, or the reference is not diffusers
            raise RuntimeError(f"{type(transformer).__name__} still holds sgld's {', '.join(left)} with no diffusers "
                               "class to stand for it (sgld.levers.shipped.sgld_classes); FP8 layers and TeaCache "
                               "segments cannot be undone: measure the reference before them")
        yield len(swapped)
    finally:
        for obj, cls in swapped:
            obj.__class__ = cls
        for processor, backend in backends:
            processor._attention_backend = backend
        for module, key, hook in paused:
            module._forward_hooks[key] = hook


@contextmanager
def components_as_shipped(components: dict[str, Any]) -> Iterator[None]:
    """``as_shipped`` on every module among a pipeline's ``components`` (DiTs, text encoders, VAEs) at once."""
    with ExitStack() as stack:
        for component in components.values():
            if isinstance(component, nn.Module):
                stack.enter_context(as_shipped(component))
        yield
