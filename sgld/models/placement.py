"""Where each component lives between uses (offload), and bringing it in for its stage."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from sgld.config.schema import DitOffload, RunConfig

# Wan2.2's two experts; MiniMax-H3's ref2va partition (transformer_ref/), a DiT like the others.
DIT_NAMES = ("transformer", "transformer_2", "transformer_ref")
# LTX-2's text connectors run right after its text encoder and wait with it.
TEXT_ENCODER_NAMES = ("text_encoder", "text_encoder_2", "connectors")
# LTX-2's audio VAE, vocoder and latent upsampler run beside the video VAE and wait with it.
VAE_NAMES = ("vae", "audio_vae", "vocoder", "latent_upsampler")


def offloaded_components(run: RunConfig) -> set[str]:
    """Component names that wait on the CPU between uses and move in whole for their stage."""
    names = set()
    if run.offload.text_encoder:
        names |= set(TEXT_ENCODER_NAMES)
    if run.offload.dit == DitOffload.model:
        names |= set(DIT_NAMES)
    if run.offload.vae:
        names |= set(VAE_NAMES)
    return names


def layerwise_components(run: RunConfig) -> set[str]:
    """Component names whose blocks wait on the CPU and are copied in one by one as they run."""
    return set(DIT_NAMES) if run.offload.dit == DitOffload.layerwise else set()


def cpu_homed_components(run: RunConfig) -> set[str]:
    """Every component name that lives on the CPU between uses, whole or block by block."""
    return offloaded_components(run) | layerwise_components(run)


# Modules whose weights nothing changes after loading: sent home by dropping their device copies (see Placement).
# The DiTs are left out: LoRA merges and FP8 conversion change theirs in place.
UNCHANGED_NAMES = (*TEXT_ENCODER_NAMES, *VAE_NAMES, "image_encoder")


class Placement:
    """Keeps each module where the offload settings say, and brings it in for its stage.

    An offloaded module whose weights do not change (text encoders, VAEs, image encoders) keeps its CPU tensors:
    bringing it in copies them to the device (from pinned memory where pinning is on), and sending it home points
    it back at them, with nothing copied back. ``module.to("cpu")`` copied all of it back each time into fresh
    pageable memory, which also lost the pinning after the first use (LTX-2's Gemma 3: 23 GiB each way a prompt).

    ``layerwise`` modules stay on the CPU block by block: diffusers' group offloading
    copies each block in just before it runs (on CUDA: from pinned memory on a side
    stream, prefetching the next block while this one computes) and drops it after.
    """

    @classmethod
    def for_run(cls, run: RunConfig, device: torch.device) -> "Placement":
        """The placement ``run``'s offload settings ask for on ``device``."""
        return cls(device, offloaded_components(run), run.offload.pin_cpu_memory, layerwise_components(run))

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
        if name not in UNCHANGED_NAMES or not _at_home(module):  # (not at home: moved by something else)
            module.to(self.device, non_blocking=self.pin_memory)
            try:
                yield module
            finally:
                module.to("cpu")
            return
        home = _bring_in(module, lambda tensor: tensor.to(self.device, non_blocking=self.pin_memory))
        try:
            yield module
        finally:
            _send_home(module, home)


def _at_home(module: torch.nn.Module) -> bool:
    """Whether every tensor of ``module`` is on the CPU."""
    return all(tensor.device.type == "cpu" for _, _, tensor in _tensor_slots(module))


def _tensor_slots(module: torch.nn.Module) -> Iterator[tuple[dict, str, torch.Tensor]]:
    """Each parameter and buffer slot of ``module`` and its submodules: (the module's store, key, tensor)."""
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for key, tensor in store.items():
                if tensor is not None:
                    yield store, key, tensor


def _bring_in(module: torch.nn.Module, copy: Callable[[torch.Tensor], torch.Tensor]) -> dict[int, torch.Tensor]:
    """Put ``copy`` of each of ``module``'s tensors (its device copy) in place of it; returns the tensors replaced, by
    the id of the object the slot then holds (a parameter keeps its object, its ``data`` swapped; a buffer slot takes
    the copy). Tied parameters and shared buffers are copied once."""
    home: dict[int, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}  # a buffer object's copy, for a second module holding it too
    for store, key, tensor in _tensor_slots(module):
        if isinstance(tensor, torch.nn.Parameter):
            if id(tensor) not in home:  # a tied parameter is one object
                home[id(tensor)] = tensor.data
                tensor.data = copy(tensor.data)
        else:
            if id(tensor) not in copies:
                copies[id(tensor)] = copy(tensor)
                home[id(copies[id(tensor)])] = tensor
            store[key] = copies[id(tensor)]
    return home


def _send_home(module: torch.nn.Module, home: dict[int, torch.Tensor]) -> None:
    """Point ``module`` back at the tensors ``_bring_in`` replaced; a tensor made on the device meanwhile (none is
    expected) is copied to the CPU."""
    for store, key, tensor in _tensor_slots(module):
        kept = home.get(id(tensor))
        if isinstance(tensor, torch.nn.Parameter):
            if kept is not None:
                tensor.data = kept
            elif tensor.device.type != "cpu":
                tensor.data = tensor.data.to("cpu")
        elif kept is not None or tensor.device.type != "cpu":
            store[key] = kept if kept is not None else tensor.to("cpu")
