"""``random:<repo-id>`` models: the released architecture with random weights made on the target device.

The model folder holds only configs and an offline tokenizer (built once under $SGLD_HOME);
the loader creates each weighted component directly on the device it will run on, seeded,
and casts it to the run's precision — a 14B transformer is never initialised on the CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from sgld.errors import UserError
from sgld.model_builders.full_size import FULL_SIZE_MODELS, RANDOM_PREFIX, DIFFUSERS_VERSION, FullSizeModel

log = logging.getLogger(__name__)

# The libraries a model_index.json names, as modules: LTX-2's ``ltx2`` is diffusers' LTX-2 pipeline package
# (its text connectors and vocoder are diffusers modules that live there).
LIBRARIES = {"diffusers": "diffusers", "transformers": "transformers", "ltx2": "diffusers.pipelines.ltx2"}

RANDOM_MARKER = ".sgld-random.json"
# The stand-in of a LoRA file a random folder's recipe loads: "<file>.random.json" holds its rank and targets.
RANDOM_LORA_SUFFIX = ".random.json"
RANDOM_FORMAT_VERSION = "2"


def is_random_path(model_path: str) -> bool:
    """True for ``random:<repo-id>`` model paths."""
    return model_path.startswith(RANDOM_PREFIX)


def full_size_model(model_path: str) -> tuple[str, FullSizeModel]:
    """The repo id and architecture a ``random:`` path names, or a UserError listing the known ones."""
    repo = model_path[len(RANDOM_PREFIX):]
    try:
        return repo, FULL_SIZE_MODELS[repo]
    except KeyError:
        known = ", ".join(RANDOM_PREFIX + r for r in FULL_SIZE_MODELS)
        raise UserError(f"no full-size architecture for {model_path!r}; known: {known}", param="model_path") from None


def materialize_random(model_path: str) -> Path:
    """The configs-only folder of a ``random:`` model (written once under $SGLD_HOME/models/random)."""
    from sgld.model_builders.tiny import build_once, sgld_home

    repo, model = full_size_model(model_path)
    folder = sgld_home() / "models" / "random" / repo.replace("/", "--")
    return build_once(folder, lambda tmp: write_random_folder(model, repo, tmp), RANDOM_FORMAT_VERSION)


def _tokenizer(kind: str):
    from transformers import ByT5Tokenizer, SiglipImageProcessor

    from sgld.model_builders import tiny_hunyuan15, tiny_ltx2, tiny_minimax_h3, tiny_parts, tiny_qwen, tiny_z_image

    return {"t5": tiny_parts.build_t5_tokenizer, "clip": tiny_parts.build_clip_tokenizer,
            "qwen2": tiny_qwen.build_qwen2_tokenizer, "qwen3": tiny_z_image.build_qwen3_tokenizer,
            "gemma3": tiny_ltx2.build_gemma3_tokenizer, "h3": tiny_minimax_h3.build_h3_tokenizer,
            "qwen25vl": tiny_hunyuan15.build_qwen25vl_tokenizer, "byt5": ByT5Tokenizer,
            "siglip": lambda: SiglipImageProcessor(size={"height": 384, "width": 384})}[kind]()


def write_random_folder(model: FullSizeModel, repo: str, folder: Path) -> None:
    """model_index.json, each component's config and the tokenizers; no weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(model.model_index(), indent=2))
    for name, comp in {**model.components, **model.extra_configs}.items():
        sub = folder / name
        sub.mkdir()
        if comp.tokenizer == "mistral":
            from sgld.model_builders.tiny_flux2 import build_mistral_tokenizer, save_pixtral_processor

            save_pixtral_processor(build_mistral_tokenizer(), sub)
        elif comp.tokenizer == "qwen2vl":
            from sgld.model_builders.tiny_qwen import build_qwen2_tokenizer, build_qwen2vl_processor, save_processor

            save_processor(build_qwen2vl_processor(build_qwen2_tokenizer()), sub)
        elif comp.tokenizer == "qwen3vl":
            from sgld.model_builders.qwen3vl_processor import qwen3vl_processor, save_qwen3vl_processor
            from sgld.model_builders.tiny_minimax_h3 import build_h3_tokenizer

            save_qwen3vl_processor(qwen3vl_processor(build_h3_tokenizer()), sub)
        elif comp.tokenizer:
            _tokenizer(comp.tokenizer).save_pretrained(sub)
        elif comp.library != "transformers":
            # Every init argument, defaults included, as diffusers' save_pretrained writes it (readers expect them).
            config = {"_class_name": comp.class_name, "_diffusers_version": DIFFUSERS_VERSION, **_full_config(comp)}
            # The file name each class reads (scheduler_config.json, guider_config.json, config.json).
            (sub / _class(comp).config_name).write_text(json.dumps(config, indent=2))
        else:
            (sub / "config.json").write_text(json.dumps({**comp.config, "architectures": [comp.class_name]}, indent=2))
    if model.modular:
        modular = {"_class_name": model.pipeline.replace("Pipeline", "ModularPipeline"),
                   "_diffusers_version": DIFFUSERS_VERSION, **model.modular}
        (folder / "modular_model_index.json").write_text(json.dumps(modular, indent=2))
    for name, spec in model.loras.items():
        (folder / (name + RANDOM_LORA_SUFFIX)).write_text(json.dumps(spec, indent=2))
    (folder / RANDOM_MARKER).write_text(json.dumps({"repo_id": repo, "weights": "random, made on the device at load"}))


def _class(comp) -> type:
    """The class a component entry names, from its library's module."""
    import importlib

    return getattr(importlib.import_module(LIBRARIES[comp.library]), comp.class_name)


def _full_config(comp) -> dict:
    """A diffusers component's config with every default filled in (built on the meta device: no memory)."""
    cls = _class(comp)
    if issubclass(cls, torch.nn.Module):
        with torch.device("meta"):
            obj = cls.from_config(comp.config)
    else:  # a scheduler: small, and it computes tables at init
        obj = cls.from_config(comp.config)
    return {k: v for k, v in dict(obj.config).items() if not k.startswith("_")}


def is_random_folder(folder: Path) -> bool:
    """True for a folder written by ``write_random_folder``."""
    return (folder / RANDOM_MARKER).is_file()


def build_random_module(library: str, cls: type, sub: Path, dtype: torch.dtype, device: torch.device,
                        seed: int, fp32_first: bool = True) -> torch.nn.Module:
    """``cls`` from the config in ``sub``, created on ``device`` with seeded random weights, in ``dtype``.

    Modules are created in fp32 (their own initialisers, and buffers such as rotary tables,
    stay as the released code computes them) and then cast: the peak is one fp32 copy of
    this component on the device. Where that copy does not fit (LTX-2's 19 B DiT beside Gemma on an
    80 GB card), or with ``fp32_first=False``, the module is created in ``dtype`` directly: half the peak,
    its initial values and computed buffers rounded as ``dtype`` computes them (random weights either way).
    """
    if fp32_first:
        try:
            return _construct(library, cls, sub, torch.float32, device, seed).to(dtype).eval().requires_grad_(False)
        except torch.OutOfMemoryError:
            import gc

            gc.collect()
            torch.cuda.empty_cache()
            log.info("%s: an fp32 copy does not fit on %s; made in %s directly", sub.name, device, dtype)
    return _construct(library, cls, sub, dtype, device, seed).to(dtype).eval().requires_grad_(False)


def _construct(library: str, cls: type, sub: Path, dtype: torch.dtype, device: torch.device,
               seed: int) -> torch.nn.Module:
    """The module of ``sub``'s config made on ``device``, its floating-point tensors created in ``dtype``."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)

    def make() -> torch.nn.Module:
        if library != "transformers":
            return cls.from_config(cls.load_config(sub))
        from transformers import AutoConfig

        return cls._from_config(AutoConfig.from_pretrained(sub))

    try:
        try:
            with torch.device(device):
                return make()
        except NotImplementedError:
            # A constructor computing a buffer with an op the device lacks for its dtype (LTX-2's latent
            # upsampler multiplies integer blur kernels; CUDA has no integer matmul): made on the CPU, then moved.
            log.info("%s: made on the CPU, then moved to %s", sub.name, device)
            torch.manual_seed(seed)
            return make().to(device)
    finally:
        torch.set_default_dtype(previous)


def random_lora_file(stand_in: Path, module: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                     seed: int = 0) -> Path:
    """The LoRA file a random folder's ``<file>.random.json`` stands for, written once beside it: seeded random
    A/B matrices of its rank on every ``target_modules`` layer of ``module``, made on ``device`` (a full-size
    rank-384 LoRA on LTX-2's DiT is 2.6 B parameters: written at first use, not with the folder)."""
    from safetensors.torch import save_file

    path = stand_in.with_name(stand_in.name.removesuffix(RANDOM_LORA_SUFFIX))
    if path.is_file():
        return path
    spec = json.loads(stand_in.read_text())
    rank, targets = spec["rank"], tuple("." + target for target in spec["target_modules"])
    generator = torch.Generator(device).manual_seed(seed)
    state = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(targets):
            a = torch.randn(rank, layer.in_features, generator=generator, device=device) / layer.in_features ** 0.5
            b = torch.randn(layer.out_features, rank, generator=generator, device=device) * 0.01 / rank ** 0.5
            state[f"transformer.{name}.lora_A.weight"] = a.to(dtype).cpu()
            state[f"transformer.{name}.lora_B.weight"] = b.to(dtype).cpu()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp))
    tmp.replace(path)
    return path
