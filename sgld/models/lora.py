"""LoRA adapters on a model's DiTs: read through diffusers' own loaders, applied with PEFT.

diffusers reads an adapter (its family's ``lora_state_dict``: diffusers/PEFT layout, and the
Kohya / community layouts through diffusers' converters) and PEFT wraps the targeted layers.
Two ways to run a set of adapters: **merged** (fused into the weights: no per-step cost) or
**dynamic** (PEFT's adapter layers stay separate, so the set and its scales can change between
requests). Every check runs before the model is touched: a refused adapter leaves the model as
it was.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from sgld.errors import UserError
from sgld.families import FamilySpec
from sgld.models.safetensors_only import PICKLE_SUFFIXES

log = logging.getLogger(__name__)

# --lora-target: which experts an adapter goes into (Wan2.2 A14B has two; the other models one).
TARGETS = {"transformer": ("transformer",), "transformer_2": ("transformer_2",), "transformer_ref": ("transformer_ref",),
           "all": ("transformer", "transformer_2", "transformer_ref")}
# A DiT partition whose adapters are written under its own prefix (MiniMax-H3's ref2va DiT: diffusers'
# MiniMaxH3LoraLoaderMixin), read into that DiT as its ``transformer.`` layers.
OWN_PREFIX = ("transformer_ref",)
# SGLang's name for a --lora-path adapter given no --lora-nickname.
DEFAULT_NICKNAME = "default"


def startup_nicknames(loras: Sequence) -> list[str]:
    """The nicknames of a run's adapters (``model.loras``): each one's own, else ``default`` for the first unnamed
    one (SGLang's) and the file's stem for any later one."""
    names, defaulted = [], False
    for lora in loras:
        if lora.name:
            names.append(lora.name)
        elif not defaulted:
            names.append(DEFAULT_NICKNAME)
            defaulted = True
        else:
            names.append(Path(lora.path).stem)
    return names


@dataclass(frozen=True)
class Adapter:
    """One adapter to apply: its name (nickname), file, strength and target experts."""

    name: str
    path: Path
    scale: float = 1.0
    target: str = "transformer"

    @property
    def key(self) -> str:
        """The name PEFT keeps it under (module names take no dots or slashes): its name, file and DiTs, so one
        nickname or file used twice (``--lora-path`` and the LoRA dir, say) never collides."""
        digest = hashlib.sha1(f"{self.path}|{self.target}".encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_]', '_', self.name)}_{digest}"


def adapter_file(path: str | Path) -> Path:
    """The adapter's safetensors file: ``path`` itself, or the one safetensors file of a folder."""
    path = Path(path).expanduser()
    if path.suffix in PICKLE_SUFFIXES:
        raise UserError(f"LoRA {str(path)!r} is a pickle file ({path.suffix}); sgld loads safetensors only, because "
                        "unpickling can run arbitrary code. Convert it with safetensors.torch.save_file",
                        param="lora_path")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            found = ", ".join(p.name for p in files) or "none"
            raise UserError(f"LoRA folder {str(path)!r} must hold one .safetensors file (found: {found})",
                            param="lora_path")
        return files[0]
    if not path.is_file():
        raise UserError(f"LoRA {str(path)!r} does not exist", param="lora_path")
    if path.suffix != ".safetensors":
        raise UserError(f"LoRA {str(path)!r} is not a .safetensors file", param="lora_path")
    return path


def check_scale(name: str, scale: float) -> float:
    """A finite number, or a UserError naming the adapter."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise UserError(f"LoRA {name!r}: scale {scale!r} is not a finite number", param="lora_scale")
    return float(scale)


@dataclass
class AdapterWeights:
    """An adapter as diffusers reads it: ``transformer.<layer>.lora_A/B...`` tensors, alphas, metadata."""

    state: dict
    alphas: Optional[dict]
    metadata: Optional[dict]


def read_adapter(spec: FamilySpec, file: Path, transformer: torch.nn.Module,
                 expert: str = "transformer") -> AdapterWeights:
    """Read an adapter with the family's diffusers loader (its converters turn Kohya/community keys into diffusers')
    for the DiT ``expert``: ``transformer.`` layers, or a partition's own (``transformer_ref.``) when it has them."""
    import inspect

    loader = getattr(importlib.import_module("diffusers.loaders.lora_pipeline"), spec.lora_loader)
    takes_alphas = "return_alphas" in inspect.signature(loader.lora_state_dict).parameters  # FLUX
    try:
        out = loader.lora_state_dict(str(file), use_safetensors=True, return_lora_metadata=True,
                                     **({"return_alphas": True} if takes_alphas else {}))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"LoRA {str(file)!r} could not be read as a {spec.name} adapter: {exc}",
                        param="lora_path") from None
    state, alphas, metadata = out if takes_alphas else (out[0], None, out[1])
    expand = getattr(loader, "_maybe_expand_t2v_lora_for_i2v", None)
    if expand is not None:  # Wan: a text-to-video adapter gets zero image-attention layers on an I2V model
        state = expand(transformer=transformer, state_dict=state)
    if expert in OWN_PREFIX and any(key.startswith(f"{expert}.") for key in state):
        state = {"transformer." + key.removeprefix(f"{expert}."): value for key, value in state.items()
                 if key.startswith(f"{expert}.")}
    if not any(key.startswith("transformer.") for key in state):
        prefixes = ", ".join(sorted({key.split(".")[0] for key in state})) or "none"
        raise UserError(f"LoRA {str(file)!r} has no layers for {expert} (its layers are for: {prefixes}); give "
                        "--lora-target the DiT it was trained for", param="lora_target")
    skipped = sorted({key.split(".")[0] for key in state if not key.startswith("transformer.")})
    if skipped:
        log.warning("LoRA %s: only the DiT's layers are applied; %s layers are skipped", file, ", ".join(skipped))
    return AdapterWeights(state, alphas or None, metadata)


def check_fits(state: Mapping[str, torch.Tensor], module: torch.nn.Module, file: Path, expert: str) -> None:
    """Every layer the adapter names exists in ``module`` and has the shape its A/B matrices need."""
    layers = {name: m for name, m in module.named_modules()}
    weights = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
    if not weights:
        raise UserError(f"LoRA {str(file)!r} has no transformer layers (keys such as {sorted(state)[:3]}): "
                        "is it an adapter for this model family?", param="lora_path")
    missing, wrong = [], []
    for key, tensor in weights.items():
        layer_name, _, kind = key.partition(".lora_")
        layer = layers.get(layer_name)
        if layer is None:
            missing.append(layer_name)
            continue
        weight = getattr(layer, "weight", None)
        if weight is None or weight.dim() != 2 or not kind.endswith("weight"):
            continue
        # A GGUF layer's weight holds packed blocks: its features come from the layer, not the weight's shape.
        out_features, in_features = getattr(layer, "out_features", weight.shape[0]), getattr(layer, "in_features", weight.shape[1])
        if (kind.startswith("A") and tensor.shape[1] != in_features) or (kind.startswith("B") and tensor.shape[0] != out_features):
            wrong.append(f"{layer_name} ({tuple(tensor.shape)} for a {in_features}->{out_features} layer)")
    if missing:
        names = sorted(set(missing))
        raise UserError(f"LoRA {str(file)!r} names {len(names)} layer(s) that {expert} does not have "
                        f"(e.g. {', '.join(names[:3])}): an adapter for another model?", param="lora_path")
    if wrong:
        raise UserError(f"LoRA {str(file)!r} does not fit {expert}: {', '.join(wrong[:3])}", param="lora_path")


def stored_weights(folder: Path) -> dict[str, Path]:
    """Parameter name -> the safetensors file of a component folder that holds it."""
    import json

    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        return {name: folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        return {}
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        return {name: files[0] for name in f.keys()}


def restore_base_weights(module: torch.nn.Module, folder: Optional[Path]) -> bool:
    """Put the stored weights back into every LoRA-wrapped layer of ``module`` (bit-exact); False without files."""
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    layers = {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}
    stored = stored_weights(folder) if folder is not None else {}
    wanted = {f"{name}.weight": m.get_base_layer().weight for name, m in layers.items()}
    if not stored or any(key not in stored for key in wanted):
        return False
    with torch.no_grad():
        for file in sorted({stored[key] for key in wanted}):
            with safe_open(str(file), framework="pt") as f:
                for key, weight in wanted.items():
                    if stored[key] == file:
                        weight.copy_(f.get_tensor(key).to(weight.dtype))  # the cast the load made
    return True


class LoraSet:
    """The adapters loaded into one model's experts, the active set with its scales, and whether it is fused.

    ``max_loaded`` bounds the adapters kept loaded: the least recently used ones not in use are dropped.
    ``weight_folders`` (expert -> its component folder) let unmerging put the stored weights back
    bit-exact; without them (``random:`` models) it subtracts the adapters' delta (exact up to rounding).
    """

    def __init__(self, spec: FamilySpec, experts: Mapping[str, torch.nn.Module], merge: bool,
                 max_loaded: Optional[int] = None, weight_folders: Optional[Mapping[str, Path]] = None):
        self.spec = spec
        self.experts = dict(experts)
        self.merge = merge
        self.max_loaded = max_loaded
        self.weight_folders = dict(weight_folders or {})
        self.loaded: OrderedDict[str, Adapter] = OrderedDict()  # least recently used first
        self.active: tuple[Adapter, ...] = ()
        self.fused = False
        # Experts whose adapters are switched off (SGLang's unmerge_lora_weights) until switched on again.
        self.off: set[str] = set()

    def targets(self, adapter: Adapter) -> list[str]:
        """The experts ``adapter`` goes into (those this model has), or a UserError."""
        if adapter.target not in TARGETS:
            raise UserError(f"LoRA {adapter.name!r}: target {adapter.target!r} is not one of {', '.join(TARGETS)}",
                            param="lora_target")
        names = [name for name in TARGETS[adapter.target] if name in self.experts]
        if not names and adapter.target == "transformer" and list(self.experts) == ["transformer_ref"]:
            names = ["transformer_ref"]  # its only DiT, as diffusers routes an adapter into a lone transformer_ref
        if not names:
            raise UserError(f"LoRA {adapter.name!r}: this model has no {adapter.target} "
                            f"(its DiTs: {', '.join(self.experts)})", param="lora_target")
        return names

    def load(self, adapter: Adapter) -> None:
        """Load ``adapter`` into its experts unless it is loaded already (same name and file)."""
        if adapter.key in self.loaded:  # the same name, file and DiTs (the key says all three)
            self.loaded.move_to_end(adapter.key)
            return
        check_scale(adapter.name, adapter.scale)
        file = adapter_file(adapter.path)
        experts = self.targets(adapter)
        weights = read_adapter(self.spec, file, self.experts[experts[0]], experts[0])
        for name in experts:  # every check before any expert is touched
            check_fits(weights.state, self.experts[name], file, name)
        done = []
        try:
            for name in experts:
                with warnings.catch_warnings():  # PEFT warns whenever a model gets a second adapter
                    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                    self.experts[name].load_lora_adapter(dict(weights.state), network_alphas=weights.alphas,
                                                         adapter_name=adapter.key, metadata=weights.metadata)
                done.append(name)
        except Exception as exc:
            for name in done:  # nothing half-applied
                self.experts[name].delete_adapters(adapter.key)
            raise UserError(f"LoRA {str(file)!r} could not be applied: {exc}", param="lora_path") from None
        self.loaded[adapter.key] = adapter
        log.info("LoRA %s (%s) loaded into %s", adapter.name, file, ", ".join(experts))

    def _evict(self) -> None:
        """Drop the least recently used adapters not in use while more than ``max_loaded`` are loaded."""
        in_use = {adapter.key for adapter in self.active}
        while self.max_loaded is not None and len(self.loaded) > self.max_loaded:
            victim = next((name for name in self.loaded if name not in in_use), None)
            if victim is None:
                break
            self.unload(victim)

    def unload(self, key: str) -> None:
        """Drop a loaded adapter that is not active."""
        if any(adapter.key == key for adapter in self.active):
            raise UserError(f"LoRA {key!r} is in use; switch it off first", param="lora_nickname")
        adapter = self.loaded.pop(key)
        for expert in self.targets(adapter):
            self.experts[expert].delete_adapters(key)

    def apply(self, adapters: Sequence[Adapter]) -> None:
        """Make exactly ``adapters`` active with their scales (loading what is missing); merged or dynamic."""
        adapters = tuple(adapters)
        if adapters == self.active:
            return
        for adapter in adapters:
            self.load(adapter)
        if self.fused:
            self._unfuse()
        for name, module in self.experts.items():
            mine = [a for a in adapters if name in self.targets(a)]
            if not getattr(module, "peft_config", None):
                continue  # nothing was ever loaded into this expert
            if mine and name not in self.off:
                module.enable_lora()
                module.set_adapters([a.key for a in mine], [a.scale for a in mine])
            else:
                module.disable_lora()
        self.active = adapters
        for adapter in adapters:
            self.loaded.move_to_end(adapter.key)
        self._evict()
        if self.merge and adapters:
            self._fuse()

    def switch(self, experts: Sequence[str], on: bool) -> None:
        """Switch the adapters of ``experts`` on or off (off: the base weights, exactly), the active set kept."""
        self.off = self.off - set(experts) if on else self.off | set(experts)
        active, self.active = self.active, None  # apply() again: each expert as the switches now say
        self.apply(active)

    def _fuse(self) -> None:
        for name, module in self.experts.items():
            keys = [a.key for a in self.active if name in self.targets(a)]
            if keys and name not in self.off:
                module.fuse_lora(adapter_names=keys)
        self.fused = True

    def _unfuse(self) -> None:
        for name, module in self.experts.items():
            if getattr(module, "peft_config", None):
                module.unfuse_lora()
                restore_base_weights(module, self.weight_folders.get(name))
        self.fused = False

    def set_merged(self, merged: bool) -> None:
        """Fuse the active adapters into the weights (merged) or keep them as separate layers (dynamic)."""
        self.merge = merged
        if merged and self.active and not self.fused:
            self._fuse()
        elif not merged and self.fused:
            self._unfuse()


class UnknownAdapter(UserError):
    """A request names an adapter the LoRA folder does not have (the server answers 404)."""


def adapter_in_dir(lora_dir: Optional[str], name: str) -> Path:
    """The file a request's adapter ``name`` means: inside ``lora_dir`` (``x`` finds ``x.safetensors`` too), never outside.

    Nothing outside the folder is opened."""
    if not lora_dir:
        raise UserError("this server takes no per-request LoRA adapters: start it with --lora-dir DIR", param="loras")
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise UserError(f"LoRA name {name!r} must be a file name in the LoRA folder", param="loras")
    root = Path(lora_dir).expanduser().resolve()
    candidate = (root / name).resolve()
    if root not in candidate.parents:
        raise UserError(f"LoRA {name!r} is outside the LoRA folder; name an adapter inside it", param="loras")
    for path in (candidate, candidate.with_name(candidate.name + ".safetensors")):
        if path.exists() and root in path.resolve().parents:
            if path.suffix != ".safetensors":  # refused now, not when the job runs: a pickle is never opened
                raise UserError(f"LoRA {name!r} is not a .safetensors file: sgld loads adapters from safetensors "
                                "only, never a pickle file", param="loras")
            return path
    raise UnknownAdapter(f"no LoRA {name!r} in the LoRA folder (GET /v1/loras lists them)", param="loras")


def adapter_source(source: str, lora_dir: Optional[str], download: bool = True) -> Path:
    """The adapter file ``source`` names for SGLang's set_lora: inside ``lora_dir`` when the server has one (nothing
    outside it is read), else a local ``.safetensors`` file or a folder holding one, else a Hugging Face repo id
    (from the cache, else downloaded: its safetensors files only)."""
    from sgld.models.hub import downloads_off_reason, looks_like_repo_id

    if not isinstance(source, str) or not source.strip() or "\0" in source:
        raise UserError(f"lora_path {source!r} must name a .safetensors file, a folder or a Hugging Face repo id",
                        param="lora_path")
    if lora_dir:
        path = adapter_in_dir(lora_dir, source)
        return adapter_file(path)
    local = Path(source).expanduser()
    if local.exists() or not looks_like_repo_id(source):
        return adapter_file(local)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return adapter_file(snapshot_download(source, allow_patterns=["*.safetensors"], local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, UserError, OSError, ValueError):
        pass  # not (wholly) in the cache
    reason = downloads_off_reason(download)
    if reason is not None:
        raise UserError(f"LoRA {source!r} is not in the Hugging Face cache and {reason}", param="lora_path")
    try:
        return adapter_file(snapshot_download(source, allow_patterns=["*.safetensors"]))
    except RepositoryNotFoundError:
        raise UserError(f"LoRA {source!r} is not on the Hugging Face Hub (or is private: set HF_TOKEN)",
                        param="lora_path") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(f"could not download LoRA {source!r}: {exc}", param="lora_path") from None


def request_adapters(items: Sequence[Mapping], lora_dir: Optional[str]) -> list[Adapter]:
    """A request's ``loras: [{"name", "scale", "target"}]`` as adapters from the LoRA folder (checked, not loaded)."""
    adapters = []
    for item in items:
        if not isinstance(item, Mapping) or set(item) - {"name", "scale", "target"} or "name" not in item:
            raise UserError(f"each LoRA is an object {{name, scale, target}}, got {item!r}", param="loras")
        path = adapter_in_dir(lora_dir, item["name"])
        # One name per file: "style", "style.safetensors" and "./style.safetensors" are one adapter.
        name = path.relative_to(Path(lora_dir).expanduser().resolve()).with_suffix("").as_posix()
        scale = check_scale(name, item.get("scale", 1.0))
        target = item.get("target", "transformer")
        if target not in TARGETS:
            raise UserError(f"LoRA {name!r}: target {target!r} is not one of {', '.join(TARGETS)}", param="loras")
        adapters.append(Adapter(name, path, scale, target))
    if len({a.key for a in adapters}) != len(adapters):
        raise UserError("a LoRA is named twice in one request", param="loras")
    return adapters


def lora_files(lora_dir: str) -> list[tuple[str, Path]]:
    """(name, file) of every adapter in the LoRA dir: the path without ``.safetensors``, sorted."""
    root = Path(lora_dir).expanduser().resolve()
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p) for p in root.rglob("*.safetensors")
                  if p.is_file() and root in p.resolve().parents)


def adapter_layers(file: Path) -> list[str]:
    """The layer kinds an adapter file targets (``attn1.to_q``, ``ffn.net.0.proj``...), read from its header only."""
    from safetensors import safe_open

    kinds = set()
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            layer = key.partition(".lora")[0]
            parts = [p for p in layer.split(".") if not p.isdigit() and p not in ("transformer", "blocks")]
            kinds.add(".".join(parts[-2:]) if len(parts) >= 2 else layer)
    return sorted(kinds)


class HotswapLoraSet(LoraSet):
    """Switchable adapters on a compiled DiT: one adapter slot whose weights are swapped in place, never recompiling.

    Before compile, each expert gets a slot adapter of zeros over every layer the known adapters
    (``files``: the LoRA dir's and the run's) touch, at their highest rank; diffusers' hotswap then
    copies a request's adapter into it (padded to that rank, its scale folded into the B matrices,
    layers it does not touch zeroed) or zeros for no adapter. Shapes and code stay as compiled, so
    a switch costs a copy. One adapter per request; one that touches layers outside the slot is
    refused (restart the server to include it).
    """

    SLOT = "sgld_slot"

    def __init__(self, spec: FamilySpec, experts: Mapping[str, torch.nn.Module], files: Sequence[Path],
                 max_loaded: Optional[int] = None, weight_folders: Optional[Mapping[str, Path]] = None):
        super().__init__(spec, experts, merge=False, max_loaded=max_loaded, weight_folders=weight_folders)
        self.cache: OrderedDict[Path, AdapterWeights] = OrderedDict()
        shapes: dict[str, tuple[int, int]] = {}
        rank = 1
        first = next(iter(self.experts.values()))
        for file in files:
            weights = self._weights(adapter_file(file), first)
            for key, tensor in weights.state.items():
                layer, _, kind = key.partition(".lora_")
                if kind.startswith("A") and kind.endswith("weight"):
                    rank = max(rank, tensor.shape[0])
                    shapes[layer] = (tensor.shape[1], weights.state[f"{layer}.lora_B.weight"].shape[0])
        self.zero = {}
        for layer, (fan_in, fan_out) in shapes.items():
            self.zero[f"{layer}.lora_A.weight"] = torch.zeros(rank, fan_in)
            self.zero[f"{layer}.lora_B.weight"] = torch.zeros(fan_out, rank)
        if not self.zero:
            raise UserError("switching LoRA adapters with --enable-torch-compile needs the adapters present at start: "
                            "put them in the LoRA dir (or give --lora-path)", param="lora_dir")
        for name, module in self.experts.items():
            check_fits(self.zero, module, Path("the LoRA dir"), name)
            module.enable_lora_hotswap(target_rank=rank)
            module.load_lora_adapter(dict(self.zero), adapter_name=self.SLOT)
            module.set_adapters([self.SLOT], [1.0])

    def _weights(self, file: Path, transformer: torch.nn.Module) -> AdapterWeights:
        weights = self.cache.get(file)
        if weights is None:
            weights = read_adapter(self.spec, file, transformer, next(iter(self.experts)))
            self.cache[file] = weights
            while self.max_loaded is not None and len(self.cache) > self.max_loaded:
                self.cache.popitem(last=False)
        self.cache.move_to_end(file)
        return weights

    def apply(self, adapters: Sequence[Adapter]) -> None:
        """Swap ``adapters`` (at most one) into the slot of the experts it targets; zeros everywhere else."""
        adapters = tuple(adapters)
        if adapters == self.active:
            return
        if len(adapters) > 1:
            raise UserError("with --enable-torch-compile a request runs one LoRA adapter at a time", param="loras")
        states = {name: self.zero for name in self.experts}
        for adapter in adapters:
            check_scale(adapter.name, adapter.scale)
            file = adapter_file(adapter.path)
            weights = self._weights(file, next(iter(self.experts.values())))
            if weights.alphas:
                raise UserError(f"LoRA {str(file)!r} carries network alphas, which the compiled slot does not take; "
                                "run without --enable-torch-compile", param="lora_path")
            unknown = sorted({k.partition(".lora_")[0] for k in weights.state} - {k.partition(".lora_")[0]
                                                                                    for k in self.zero})
            if unknown:
                raise UserError(f"LoRA {str(file)!r} touches layers the compiled slot has not got (e.g. {unknown[0]}); "
                                "it was not in the LoRA dir at start: restart the server", param="lora_path")
            scaled = {k: v * adapter.scale if ".lora_B." in k else v for k, v in weights.state.items()}
            for name in self.targets(adapter):
                check_fits(scaled, self.experts[name], file, name)
                if name not in self.off:
                    states[name] = scaled
            self.loaded[adapter.key] = adapter
            self.loaded.move_to_end(adapter.key)
            while self.max_loaded is not None and len(self.loaded) > self.max_loaded:
                self.loaded.popitem(last=False)
        for name, module in self.experts.items():
            module.load_lora_adapter(dict(states[name]), adapter_name=self.SLOT, hotswap=True)
        self.active = adapters

    def set_merged(self, merged: bool) -> None:
        """A compiled slot stays unmerged (fusing would change the weights the graphs were traced with)."""
        if merged:
            raise UserError("with --enable-torch-compile and switchable adapters, adapters run unmerged", param="loras")
