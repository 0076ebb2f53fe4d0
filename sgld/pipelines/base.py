"""Pipeline base: components plus an ordered list of stages over one Request."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from sgld.config.schema import RunConfig
from sgld.families import FamilySpec, SizeConstraints
from sgld.models.placement import Placement
from sgld.levers.step_hooks import StepHook
from sgld.models.lora import Adapter, LoraSet, startup_nicknames
from sgld.models.memory_plan import MemoryCheck
from sgld.levers.transformer_setup import compile_transformer, configure_transformer
from sgld.models.vae_setup import configure_vae
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage


class Pipeline:
    """A family's loaded pipeline (a ``DescribedModel``): subclasses set ``spec``, ``constraints`` and ``stages``."""

    spec: ClassVar[FamilySpec]
    sample_rate: Optional[int] = None  # the sound's (Hz), in families that make sound

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        self.spec.check_run(run)
        self.components = components
        self.run = run
        self.device = device
        self.parallel = parallel
        self.placement = Placement.for_run(run, device)
        self.constraints: SizeConstraints
        self.stages: list[Stage] = []
        self.dits: dict[str, torch.nn.Module] = {}
        self._backends: dict[str, str] = {}
        self.loras: LoraSet | None = None
        self.defaults: list[Adapter] = []  # the adapters a request without ``loras`` runs with
        self.memory: MemoryCheck | None = None  # the memory plan's check of each request (a GPU run)
        # Adapters the pipeline switches on itself around some of its stages (LTX-2's stage-2 LoRA): the run's
        # LoraSet holds them too, so it exists, and keeps adapters switchable, whenever there are some.
        self.extra_adapters: list[Adapter] = []

    def configure_vae(self, vae: torch.nn.Module) -> None:
        """Tiling and encoder as the run asks: one set-up for every family's VAE."""
        configure_vae(vae, self.run.vae, needs_encoder=self.spec.needs_image)

    def configure_dit(self, name: str, module: torch.nn.Module) -> list[StepHook]:
        """Apply the run's speed levers to a DiT, place it, and return its per-step hooks for the denoise loop."""
        setup = configure_transformer(module, self.run, self.device, masked_attention=bool(self.spec.masked_attention),
                                      family=self.spec.name, expert=name)
        self.placement.place(name, module)
        self.dits[name] = module
        self._backends[name] = setup.backend
        return setup.hooks

    def configure_one_dit(self, *placed: str) -> list[StepHook]:
        """The set-up of a family with one DiT: its VAE configured, the DiT's levers applied and placed, the
        ``placed`` components placed, the size constraints read; the DiT's step hooks."""
        vae, transformer = self.components["vae"], self.components["transformer"]
        self.configure_vae(vae)
        step_hooks = self.configure_dit("transformer", transformer)
        self.place(*placed)
        self.constraints = self.spec.sizes(vae.config, transformer.config)
        return step_hooks

    def finish_setup(self, folder: Path | None = None) -> None:
        """After the stages are built: the run's LoRA adapters, then the regional compile (it must see the LoRA layers).

        ``folder``: the model folder, whose stored weights make unmerging LoRA adapters exact.
        """
        run = self.run
        self.defaults = [Adapter(name, Path(lora.path).expanduser().resolve(), lora.scale, str(lora.target))
                         for name, lora in zip(startup_nicknames(run.model.loras), run.model.loras)]
        folders = {name: folder / name for name in self.dits} if folder is not None else None
        mode = run.model.lora_merge_mode
        switchable = bool(run.server.lora_dir) or mode == "dynamic" or bool(self.extra_adapters)
        if run.model.enable_torch_compile and switchable:
            # Adapters switch by copying into a slot prepared before compile: no recompile per request.
            from sgld.models.lora import HotswapLoraSet, lora_files

            in_dir = lora_files(run.server.lora_dir) if run.server.lora_dir else []
            files = [a.path for a in self.defaults + self.extra_adapters] + [path for _, path in in_dir]
            self.loras = HotswapLoraSet(self.spec, self.dits, files, run.server.max_loaded_loras, folders)
            self.loras.apply(self.defaults)
        elif run.model.loras or run.server.lora_dir or self.extra_adapters:
            # auto: merge a fixed set (no per-step cost); keep them apart where requests choose (a LoRA dir), and
            # on a GGUF DiT, whose quantized weights a merge would dequantize.
            merge = mode == "merge" or (mode == "auto" and not switchable and not run.model.dit_weights)
            self.loras = LoraSet(self.spec, self.dits, merge, run.server.max_loaded_loras, folders)
            self.loras.apply(self.defaults)
        if run.model.enable_torch_compile:
            for name, module in self.dits.items():
                compile_transformer(module, self._backends[name], sequence_parallel=(run.parallel.sp_size or 1) > 1)
        if run.model.cuda_graphs:  # last: it captures the forward as everything above left it
            from sgld.levers.cuda_graph import enable_cuda_graphs

            for module in self.dits.values():
                enable_cuda_graphs(module, self.device)

    def place(self, *names: str) -> None:
        """Put the named components (those present) where the offload settings say."""
        for name in names:
            if self.components.get(name) is not None:
                self.placement.place(name, self.components[name])

    def check_request(self, req: Request) -> None:
        """Raise UserError when this model cannot run ``req`` (its size, or its activations on the GPU); touches no weights."""
        self.spec.check_request(req, self.constraints)
        if self.memory is not None:
            self.memory.check(req)

    def stage(self, kind: type) -> Stage:
        """The pipeline's stage of type ``kind`` (tests and benchmarks find stages by type, not position)."""
        return next(stage for stage in self.stages if isinstance(stage, kind))

    @property
    def batchable(self) -> bool:
        """Whether requests may share a forward: a step cache decides per forward, so it keeps requests apart (a
        request turning Cache-DiT or TeaCache on for itself runs alone: ``DiffGenerator.generate_batch``)."""
        return self.run.cache.kind == "none"

    def stages_for(self, reqs: list[Request]) -> list[Stage]:
        """The stages a batch runs (one ``spec.batch_key``): all of them, unless a family skips some per request."""
        return self.stages

    def run_batch(self, reqs: list[Request]) -> list[Request]:
        """Run requests of one ``spec.batch_key`` as one batch; a request that left early carries its ``error``.

        Each stage sees the requests still going; an error raised by a stage (not by one request's
        callback) fails the whole batch and propagates.
        """
        if len(reqs) > 1 and not self.batchable:
            raise ValueError(f"cache.kind={self.run.cache.kind}: requests cannot share a batch")
        going = list(reqs)
        for stage in self.stages_for(reqs):
            going = [req for req in stage.run_batch(going) if req.error is None]
            if not going:
                break
        return reqs

    def __call__(self, req: Request) -> Request:
        (req,) = self.run_batch([req])
        if req.error is not None:
            raise req.error
        return req
