"""SGLang's run-time LoRA control on one loaded model: which adapters requests run with by default, by nickname.

``set`` makes the named adapters the default set (loading a new nickname from its ``lora_path``:
inside ``--lora-dir`` when the server has one, else a local file or a Hugging Face repo id; a
known nickname without a path is the adapter loaded under it before). ``switch`` turns the
adapters of some DiTs off and on again, as SGLang's unmerge/merge endpoints do (off: the base
weights exactly). A model loaded without adapters gets its adapter set on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.lora import Adapter, LoraSet, UnknownAdapter, adapter_source, check_scale

log = logging.getLogger(__name__)

# SGLang's target names: "all", one DiT, or its critic (which sgld's models have not got).
SGLANG_TARGETS = ("all", "transformer", "transformer_2", "critic")


@dataclass(frozen=True)
class AdapterRequest:
    """One adapter of a set_lora call: its nickname, where to load it from (None: loaded before), strength, DiTs."""

    nickname: str
    source: Optional[str] = None
    strength: float = 1.0
    targets: tuple[str, ...] = ("all",)


class LoraControl:
    """The default adapters of one pipeline (``pipeline.defaults``), set and switched by nickname."""

    def __init__(self, pipeline: Any, run: RunConfig):
        self.pipeline = pipeline
        self.run = run
        self.known: dict[str, Adapter] = {a.name: a for a in pipeline.defaults}  # nickname -> its adapter
        self.sources: dict[str, str] = {a.name: str(a.path) for a in pipeline.defaults}  # as the request named it

    @property
    def experts(self) -> list[str]:
        """The model's DiTs (Wan2.2 A14B has two)."""
        return list(self.pipeline.dits)

    def lora_set(self) -> LoraSet:
        """The pipeline's adapter set; a model loaded without adapters gets one now (adapters set at run time are
        switched at run time: kept apart unless ``lora_merge_mode`` is merge)."""
        if self.pipeline.loras is None:
            merge = self.run.model.lora_merge_mode == "merge"
            self.pipeline.loras = LoraSet(self.pipeline.spec, self.pipeline.dits, merge,
                                          self.run.server.max_loaded_loras)
        return self.pipeline.loras

    def experts_of(self, targets: Sequence[str]) -> list[str]:
        """The DiTs SGLang's ``targets`` name that this model has (in model order); 400 for an unknown name."""
        wanted: set[str] = set()
        for target in targets:
            if target not in SGLANG_TARGETS:
                raise UserError(f"target {target!r} is not one of {', '.join(SGLANG_TARGETS)}", param="target")
            wanted |= set(self.experts) if target == "all" else {target}
        missing = sorted(wanted - set(self.experts))
        if missing:  # SGLang goes on without them, as here
            log.warning("LoRA target %s: this model has no %s (its DiTs: %s)", list(targets), ", ".join(missing),
                        ", ".join(self.experts))
        return [name for name in self.experts if name in wanted]

    def set(self, requests: Sequence[AdapterRequest]) -> list[Adapter]:
        """Make ``requests`` the default adapters (applied now, every check first); the adapters set."""
        chosen: list[tuple[AdapterRequest, Adapter]] = []
        for req in requests:
            experts = self.experts_of(req.targets)
            if not experts:
                continue
            target = "all" if len(experts) > 1 else experts[0]
            scale = check_scale(req.nickname, req.strength)
            if req.source is not None:
                path = adapter_source(req.source, self.run.server.lora_dir, self.run.model.download)
            elif req.nickname in self.known:
                path = self.known[req.nickname].path
            else:
                raise UnknownAdapter(f"no adapter is loaded under the nickname {req.nickname!r}; give its lora_path "
                                     "to load it", param="lora_nickname")
            chosen.append((req, Adapter(req.nickname, path, scale, target)))
        adapters = [adapter for _, adapter in chosen]
        self.lora_set().apply(adapters)  # a nickname given another file is another adapter (the old one ages out)
        self.pipeline.defaults = adapters
        for req, adapter in chosen:
            self.known[adapter.name] = adapter
            if req.source is not None:
                self.sources[adapter.name] = req.source
        return adapters

    def switch(self, targets: Sequence[str], on: bool, strength: Optional[float] = None) -> None:
        """Turn the adapters of ``targets``' DiTs on (SGLang's merge, at ``strength`` when given) or off (unmerge).
        With no adapters loaded there is nothing to switch."""
        experts = self.experts_of(targets)
        lora_set = self.pipeline.loras
        if lora_set is None:
            log.info("LoRA %s: no adapters are loaded", "merge" if on else "unmerge")
            return
        if on and strength is not None:
            check_scale("merge", strength)
            scaled = [Adapter(a.name, a.path, strength, a.target) for a in self.pipeline.defaults]
            self.pipeline.defaults = scaled
            lora_set.apply(scaled)
        lora_set.switch(experts, on)  # fused again where the run merges

    def state(self) -> dict:
        """SGLang's list_loras: the adapters loaded (nickname, path) and, per DiT whose adapters are on, the default
        ones (what a request without its own ``loras`` runs with)."""
        lora_set = self.pipeline.loras
        loaded = [{"nickname": name, "path": self.sources.get(name, str(adapter.path))}
                  for name, adapter in self.known.items()]
        active: dict[str, list] = {}
        if lora_set is not None:
            for expert in self.experts:
                if expert in lora_set.off:
                    continue
                on = [a for a in self.pipeline.defaults if expert in lora_set.targets(a)]
                if on:
                    active[expert] = [{"nickname": a.name, "path": self.sources.get(a.name, str(a.path)),
                                       "merged": lora_set.fused, "mode": "merged" if lora_set.fused else "unmerged",
                                       "strength": a.scale} for a in on]
        return {"loaded_adapters": loaded, "active": active}
