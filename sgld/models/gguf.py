"""DiT weights from a GGUF file (``--dit-weights``): checked from its header against the model folder's DiT, then
loaded by diffusers with the linear layers left quantized.

diffusers reads the file (``from_single_file`` with ``GGUFQuantizationConfig``): each quantized linear layer
becomes a ``GGUFLinear`` that dequantizes its weight to the compute precision when it runs, and the class's
single-file converter turns the original checkpoint's tensor names into diffusers'. Before that, the header
alone (no tensor data is read) is held to the DiT the folder's config describes — the converter runs on
meta tensors — so a file of another family, a truncated file or a tensor of the wrong shape is refused
with one message before any weight loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sgld.errors import UserError
from sgld.models.hub import repo_file, split_file_reference

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
PLAIN_TYPES = ("F32", "F16")  # tensors diffusers loads as ordinary tensors (cast to the compute precision)


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a GGUF file: its name, logical shape, GGML type and bytes in the file."""

    name: str
    shape: tuple[int, ...]
    qtype: str
    nbytes: int

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file's header says: its tensors and the architecture it names (general.architecture)."""

    path: Path
    architecture: str | None
    tensors: dict[str, GgufTensor]

    def loaded_bytes(self, element_size: int) -> int:
        """Bytes the tensors take once loaded: quantized ones as stored, plain ones at ``element_size`` per value."""
        return sum(t.numel * element_size if t.qtype in PLAIN_TYPES else t.nbytes for t in self.tensors.values())


def dit_weights_path(reference: str, download: bool = True) -> Path:
    """The local file ``--dit-weights`` names: a path, or ``org/name/file.gguf`` in a Hugging Face repo (cache, else downloaded)."""
    if not reference.endswith(SUFFIX):
        raise UserError(f"dit_weights={reference!r}: sgld reads replacement DiT weights from GGUF files (.gguf) only",
                        param="dit_weights")
    path = Path(reference).expanduser()
    if path.is_file():
        return path.resolve()
    hub = split_file_reference(reference)
    if hub is None or path.exists():
        raise UserError(f"dit_weights={reference!r} does not exist (a local .gguf file, or org/repo/file.gguf on the "
                        "Hugging Face Hub)", param="dit_weights")
    return repo_file(*hub, download=download)


def read_header(path: Path) -> GgufHeader:
    """The tensors a GGUF file holds, from its header (the data is memory-mapped, not read); a UserError if unreadable."""
    import gguf

    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as exc:
        with path.open("rb") as f:
            magic = f.read(4)
        what = "truncated or corrupt" if magic == b"GGUF" else "not a GGUF file (no GGUF magic)"
        raise UserError(f"dit_weights {str(path)!r} ({size} bytes) is {what}: {exc}", param="dit_weights") from None
    tensors = {}
    for t in reader.tensors:
        qtype = gguf.GGMLQuantizationType(int(t.tensor_type)).name
        tensors[t.name] = GgufTensor(t.name, tuple(int(d) for d in reversed(t.shape)), qtype, int(t.n_bytes))
    field = reader.fields.get("general.architecture")
    architecture = field.contents() if field is not None else None
    return GgufHeader(path, architecture, tensors)


def _dit_class(folder: Path, component: str) -> type:
    import json

    import diffusers

    config = json.loads((folder / component / "config.json").read_text())
    return getattr(diffusers, config["_class_name"])


def expected_shapes(cls: type, folder: Path, component: str) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """The DiT's tensor shapes (built on the meta device from the folder's config) and its config."""
    from accelerate import init_empty_weights

    config = cls.load_config(folder, subfolder=component)
    with init_empty_weights():
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, dict(config)


def check_dit_weights(header: GgufHeader, folder: Path, component: str, family: str) -> None:
    """Raise UserError unless ``header``'s tensors, converted as diffusers will, are the folder DiT's, shape for shape."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES, _should_convert_state_dict_to_diffusers
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    cls = _dit_class(folder, component)
    name = f"dit_weights {header.path.name!r}"
    says = f" (the file says general.architecture={header.architecture!r})" if header.architecture else ""
    supported = set(PLAIN_TYPES) | {t.name for t in SUPPORTED_GGUF_QUANT_TYPES}
    odd = sorted({(t.qtype, t.name) for t in header.tensors.values() if t.qtype not in supported})
    if odd:
        raise UserError(f"{name}: tensor {odd[0][1]!r} is {odd[0][0]}, which diffusers cannot dequantize "
                        f"(it reads {', '.join(sorted(supported))})", param="dit_weights")
    expected, config = expected_shapes(cls, folder, component)
    checkpoint = {t.name: torch.empty(t.shape, device="meta") for t in header.tensors.values()}
    if _should_convert_state_dict_to_diffusers(expected, checkpoint):
        convert = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
        try:
            checkpoint = convert(checkpoint=checkpoint, config=config)
        except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as exc:
            raise UserError(f"{name} is not a {family} DiT ({cls.__name__}){says}: diffusers' converter for "
                            f"{cls.__name__} fails on it ({type(exc).__name__}: {exc})", param="dit_weights") from None
    got = {k: tuple(v.shape) for k, v in checkpoint.items()}
    missing = sorted(set(expected) - set(got))
    if len(missing) == len(expected) or not set(expected) & set(got):
        example = next(iter(header.tensors), "none")
        raise UserError(f"{name} is not a {family} DiT ({cls.__name__}){says}: none of its tensors (e.g. {example!r}) "
                        "is one of the DiT's", param="dit_weights")
    if missing:
        raise UserError(f"{name} lacks {len(missing)} of the {family} DiT's {len(expected)} tensors (e.g. "
                        f"{', '.join(missing[:3])}): a checkpoint of another variant?{says}", param="dit_weights")
    wrong = [f"{k} is {got[k]} in the file, {expected[k]} in {component}/config.json's DiT"
             for k in sorted(expected) if got[k] != expected[k]]
    if wrong:
        raise UserError(f"{name} does not fit the model folder's {family} DiT: {'; '.join(wrong[:3])}"
                        f"{f' (and {len(wrong) - 3} more)' if len(wrong) > 3 else ''}", param="dit_weights")
    extra = sorted(set(got) - set(expected))
    if extra:
        log.warning("dit_weights %s: %d tensors the DiT does not use are ignored (e.g. %s)", header.path.name,
                    len(extra), ", ".join(extra[:3]))


def load_gguf_dit(path: Path, folder: Path, component: str, dtype: torch.dtype) -> torch.nn.Module:
    """The folder's DiT with ``path``'s weights, linear layers quantized, computing in ``dtype`` (on the CPU)."""
    from diffusers import GGUFQuantizationConfig

    cls = _dit_class(folder, component)
    try:
        module = cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                                      config=str(folder), subfolder=component, dtype=dtype)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise UserError(f"dit_weights {str(path)!r} could not be loaded into {cls.__name__}: {exc}",
                        param="dit_weights") from None
    return module.eval().requires_grad_(False)


def quantized_layers(module: torch.nn.Module) -> int:
    """How many of ``module``'s linear layers hold GGUF-quantized weights."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    return sum(isinstance(m, GGUFLinear) for m in module.modules())
