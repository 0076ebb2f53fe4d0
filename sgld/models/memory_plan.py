"""The memory plan: which components wait on the CPU, whether the DiT runs block by block, whether the VAE
tiles — chosen to fit a GPU memory budget before any weights load (``--max-gpu-memory``, ``sgl-diffusion plan``).

What it knows comes from files that hold no weights: the model folder's safetensors headers (tensor shapes;
``random:`` folders, which have configs only, build each component on the meta device), a GGUF DiT's header,
and the request's size. A run goes through three phases, each with its own peak:

- text: the weights kept on the GPU, plus the text encoders (brought in when offloaded);
- denoise: the kept weights, the DiT (whole; or, layer-wise, what lies outside its repeated blocks plus two
  blocks: the one running and the one prefetched) and the DiT's activations;
- decode: the kept weights, the VAE and its decode activations (tiled or not).

Activations follow ``ACTIVATION`` (per DiT class: bytes per token and hidden unit) and ``VAE_DECODE`` (per
VAE class: bytes per output pixel), measured with ``bench/activations.py`` (docs/performance.md, "Memory
plan"). The plan tries every combination of the settings the run left unset (explicit ones stay), drops
those ``sgld/config/conflicts.py`` refuses, and keeps the cheapest that fits the budget less a headroom
(``HEADROOM_*``: the caching allocator's fragmentation and the kernels' workspaces). When none fits, the
request is refused, naming the frames or size that would fit, if its figures were measured; a family without
them (``DEFAULT_*`` stand in) is only warned of, since a refusal must not rest on a guess.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import torch

from sgld.config.conflicts import check_conflicts
from sgld.config.schema import DitOffload, RunConfig
from sgld.errors import ConfigError, UserError
from sgld.families import FamilySpec, GuidanceKind, OutputKind, family_of_index
from sgld.models.components import DTYPES, component_dtype, component_specs
from sgld.models.placement import DIT_NAMES, TEXT_ENCODER_NAMES, VAE_NAMES
from sgld.models.registry import read_model_index
from sgld.request import Request

log = logging.getLogger(__name__)

GIB = 1024**3
# The plan fits its peak under budget - headroom: the caching allocator's fragmentation (its reserved memory
# runs past what is allocated) and cuBLAS/cuDNN workspaces.
HEADROOM_FIXED = GIB // 4
HEADROOM_SHARE = 0.04

# DiT activations per forward: tokens x hidden size x bytes per value x this factor (the live tensors of one
# block at its peak, in units of the hidden size), and the text tokens joined to the sequence (joint attention;
# 0 where text enters through cross-attention). Measured by bench/activations.py on an H200, two-block copies
# of the released widths (docs/results/activations_h200.json): Wan2.1-14B 11.0-11.1, FLUX.1-dev 16.8-17.2,
# Qwen-Image 15.3, Z-Image 16.0, FLUX.2 [klein] 21.5, HunyuanVideo-1.5 5.8; HunyuanVideo (not measured) as FLUX.
ACTIVATION: dict[str, tuple[float, int]] = {
    "WanTransformer3DModel": (11.5, 0),
    "FluxTransformer2DModel": (17.5, 512),
    "QwenImageTransformer2DModel": (15.0, 256),
    "ZImageTransformer2DModel": (16.0, 128),
    "HunyuanVideoTransformer3DModel": (17.5, 256),
    "HunyuanVideo15Transformer3DModel": (6.0, 1000),
    "Flux2Transformer2DModel": (22.0, 512),
    "LTX2VideoTransformer3DModel": (38.0, 0),  # video tokens (cross-attends to its text; audio tokens ride along)
}
DEFAULT_ACTIVATION = (22.0, 512)

# VAE decode: bytes per output pixel per value size per frame held at once, and the frames one decode step
# holds (None: the whole video). Measured as above: Wan's causal VAE 1411 (4 frames a step), FLUX's and
# Z-Image's AutoencoderKL and FLUX.2's 1218, Qwen-Image's 2112, HunyuanVideo-1.5's 910 (every frame at once).
# Tiled, the same figure over one tile (the run's tile size, or 256; AutoencoderKL tiles at its sample_size).
VAE_DECODE: dict[str, tuple[float, Optional[int]]] = {
    "AutoencoderKLWan": (1420.0, 4),
    "AutoencoderKLQwenImage": (2120.0, 4),
    "AutoencoderKL": (1220.0, 1),
    "AutoencoderKLFlux2": (1220.0, 1),
    "AutoencoderKLHunyuanVideo": (910.0, None),
    "AutoencoderKLHunyuanVideo15": (910.0, None),
    "AutoencoderKLLTX2Video": (57.0, None),
}
# Tiled decodes whose peak the one-tile figure undercounts (overlapping spatial and temporal tiles, blended in
# full-size buffers): at least this share of the untiled peak. LTX-2 768x512x121: 6.98 of 10.46 GiB.
TILED_SHARE_AT_LEAST = {"AutoencoderKLLTX2Video": 0.7}
DEFAULT_VAE_DECODE = (2120.0, None)
# Text encoding's activations (measured 0.03-0.8 GiB: T5-XXL 0.26, UMT5 0.49, HunyuanVideo-1.5's encoders 0.80).
TEXT_ACTIVATION = GIB // 2
# Text encoders that keep far more: LTX-2's Gemma 3 returns every layer's hidden states of both prompts and its
# connectors refine them (4.70 GiB measured at 768x512x121, bench/activations.py on an H100).
TEXT_ACTIVATION_BY_CLASS = {"Gemma3ForConditionalGeneration": 5 * GIB}
DEFAULT_TILE = 256

# Ordinal costs of each way to save memory (powers of two: the plan avoids the dearest first). Offloading the
# VAE moves a small module; the text encoder moves once per request; tiling slows the decode (1.8-2.1x for Wan
# at 720p); a whole DiT moves once per request; layer-wise copies every block in every step (1.06x for A14B).
COST = {"vae": 1, "text_encoder": 2, "tiling": 4, "dit_model": 8, "dit_layerwise": 16}
BLOCK = re.compile(r"^(.*?\.)?([A-Za-z_]*blocks|layers|[a-z_]*refiner)\.(\d+)\.")


@dataclass(frozen=True)
class DitSize:
    """A DiT's bytes on the GPU: in all, outside its repeated blocks, its largest block, and its largest linear weight."""

    total: int
    outside_blocks: int
    largest_block: int
    largest_linear: int = 0  # bytes a GGUF layer dequantizes to when it runs (0: not quantized)

    @property
    def layerwise(self) -> int:
        """On the GPU under layer-wise offload: everything outside the blocks, the running block and the prefetched one."""
        return self.outside_blocks + 2 * self.largest_block


@dataclass(frozen=True)
class ModelSizes:
    """Bytes each kind of component takes on the GPU at the run's precisions (no weights read)."""

    text_encoders: int
    dits: tuple[DitSize, ...]
    vae: int
    other: int  # components no offload setting moves (image encoders)


@dataclass(frozen=True)
class Activations:
    """Bytes the request's forward and decode need beside the weights."""

    dit: int
    decode: int
    decode_tiled: int
    # The DiT or VAE classes with no measured figure (the defaults stood in): the estimate is a guess then.
    unmeasured: tuple[str, ...] = ()
    text: int = TEXT_ACTIVATION  # text encoding's


@dataclass(frozen=True)
class Choice:
    """One way to place the model: the offload settings and VAE tiling."""

    text_encoder: bool
    dit: DitOffload
    vae: bool
    tiling: bool

    @property
    def cost(self) -> int:
        return (COST["text_encoder"] * self.text_encoder + COST["vae"] * self.vae + COST["tiling"] * self.tiling
                + {DitOffload.none: 0, DitOffload.model: COST["dit_model"], DitOffload.layerwise: COST["dit_layerwise"]}[self.dit])


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen placement, its predicted peak per phase, and the budget it was made for (bytes)."""

    choice: Choice
    phases: dict[str, int]
    budget: int
    given: frozenset[str] = field(default_factory=frozenset)  # offload keys the run set itself

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    def describe(self) -> str:
        """One line: ``text encoder on CPU, DiT layer-wise with 1-block prefetch, VAE tiled; peak ≈ 11.6 GiB of 12.0``."""
        c = self.choice
        parts = ["text encoder on CPU" if c.text_encoder else "text encoder on GPU",
                 {DitOffload.none: "DiT on GPU", DitOffload.model: "DiT on CPU, moved in whole to denoise",
                  DitOffload.layerwise: "DiT layer-wise with 1-block prefetch"}[c.dit],
                 ("VAE on CPU" if c.vae else "VAE on GPU") + (", tiled" if c.tiling else "")]
        phase = max(self.phases, key=self.phases.get)
        return f"{', '.join(parts)}; peak ≈ {self.peak / GIB:.1f} GiB ({phase}) of {self.budget / GIB:.1f} GiB"

    def apply(self, run: RunConfig) -> RunConfig:
        """``run`` with the settings it left unset decided by this plan (a copy; the explicit ones stay)."""
        out = copy.deepcopy(run)
        out.offload.text_encoder, out.offload.dit, out.offload.vae = self.choice.text_encoder, self.choice.dit, self.choice.vae
        out.vae.tiling = self.choice.tiling
        return out


def _numel(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


def safetensors_numels(folder: Path) -> dict[str, int]:
    """Tensor name -> element count of every safetensors file in ``folder``, from the files' headers only."""
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        out.update({k: _numel(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return out


def meta_numels(library: str, class_name: str, folder: Path) -> dict[str, int]:
    """Parameter name -> element count of a component built from its config on the meta device (configs-only folders)."""
    import importlib

    from sgld.model_builders.random_weights import LIBRARIES

    cls = getattr(importlib.import_module(LIBRARIES[library]), class_name)  # LTX-2's "ltx2": diffusers' package
    with torch.device("meta"):
        if library != "transformers":
            module = cls.from_config(cls.load_config(folder))
        else:
            from transformers import AutoConfig

            module = cls._from_config(AutoConfig.from_pretrained(folder))
    return {name: p.numel() for name, p in module.named_parameters()}


def dit_size(tensor_bytes: dict[str, int], linear_bytes: int = 0) -> DitSize:
    """A DiT's sizes from its tensors' bytes: blocks are the tensors under ``<list>.<i>.`` (blocks, layers, refiners)."""
    blocks: dict[tuple[str, str], int] = {}
    outside = 0
    for name, nbytes in tensor_bytes.items():
        match = BLOCK.match(name)
        if match:
            key = (match.group(2), match.group(3))
            blocks[key] = blocks.get(key, 0) + nbytes
        else:
            outside += nbytes
    return DitSize(sum(tensor_bytes.values()), outside, max(blocks.values(), default=0), linear_bytes)


def model_sizes(folder: Path, run: RunConfig, gguf_header=None) -> ModelSizes:
    """What each component takes on the GPU at the run's precisions; a GGUF DiT (``gguf_header``) as its file holds it."""
    from sgld.model_builders.random_weights import is_random_folder

    index = read_model_index(folder)
    specs = component_specs(index)
    text_encoders = [name for name, _, _ in specs if name.startswith("text_encoder")]
    unloaded = family_of_index(index, str(folder)).unloaded_components(run)  # MiniMax-H3's unused partition
    sizes = {"text": 0, "vae": 0, "other": 0}
    dits = []
    for name, library, class_name in specs:
        dtype = component_dtype(name, run, text_encoders)
        if dtype is None or name in unloaded:
            continue
        element = torch.tensor([], dtype=dtype).element_size()
        if name == "transformer" and gguf_header is not None:
            from sgld.models.gguf import PLAIN_TYPES

            quantized = [t for t in gguf_header.tensors.values() if t.qtype not in PLAIN_TYPES]
            # A GGUF layer dequantizes its weight when it runs: fp16 values, then cast to the compute precision.
            largest = 3 * max((t.numel for t in quantized), default=0) * 2
            dits.append(dit_size({t.name: (t.numel * element if t.qtype in PLAIN_TYPES else t.nbytes)
                                  for t in gguf_header.tensors.values()}, largest))
            continue
        numels = (meta_numels(library, class_name, folder / name) if is_random_folder(folder)
                  else safetensors_numels(folder / name))
        if name in DIT_NAMES:
            dits.append(dit_size({k: n * element for k, n in numels.items()}))
        else:
            kind = "text" if name in text_encoders or name in TEXT_ENCODER_NAMES else "vae" if name in VAE_NAMES else "other"
            sizes[kind] += sum(numels.values()) * element
    return ModelSizes(sizes["text"], tuple(dits), sizes["vae"], sizes["other"])


def _read_config(folder: Path, name: str) -> dict:
    sub = folder / name
    file = next((sub / f for f in ("config.json",) if (sub / f).is_file()), None)
    return json.loads(file.read_text()) if file else {}


def hidden_size(config: dict) -> int:
    """The DiT's hidden size from its config (heads x head size, or ``dim``)."""
    if "num_attention_heads" in config and "attention_head_dim" in config:
        return int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return int(config.get("dim") or config.get("hidden_size"))


def request_size(spec: FamilySpec, req: Request, folder: Optional[Path] = None) -> tuple[int, int, int]:
    """(height, width, frames) the plan sizes for: an unset size as the family's default canvas (MiniMax-H3's 16:9),
    else 1024² (edit models: from the input); images one frame."""
    frames = req.num_frames if spec.output == OutputKind.video else 1
    if req.height is None and req.width is None and folder is not None:
        canvas = spec.default_canvas(folder)
        if canvas is not None:
            return canvas[0], canvas[1], frames
    return req.height or 1024, req.width or 1024, frames


def activations(spec: FamilySpec, folder: Path, run: RunConfig, req: Request, height: int, width: int,
                frames: int) -> Activations:
    """The DiT forward's and the VAE decode's activation bytes for ``req`` at ``height`` x ``width`` x ``frames``."""
    constraints = spec.constraints_in_folder(folder)
    dit_config = _read_config(folder, "transformer") or _read_config(folder, "transformer_2")
    per_token, text_tokens = ACTIVATION.get(dit_config.get("_class_name"), DEFAULT_ACTIVATION)
    latent_frames = (frames - 1) // constraints.temporal_factor + 1 if spec.output == OutputKind.video else 1
    m = constraints.spatial_multiple
    tokens = math.ceil(height / m) * math.ceil(width / m) * latent_frames + text_tokens
    par = run.parallel
    tokens = math.ceil(tokens / (par.sp_size or 1))
    batched = spec.guided(req) and spec.guidance in (GuidanceKind.cfg, GuidanceKind.cfg_extra)
    branches = 2 if batched and not par.enable_cfg_parallel else 1
    samples = max(run.sampling.batch_size, 1) * branches
    dit_element = DTYPES[run.model.precision].itemsize
    dit = int(samples * tokens * hidden_size(dit_config) * per_token * dit_element)
    vae_config = _read_config(folder, "vae")
    per_pixel, in_flight = VAE_DECODE.get(vae_config.get("_class_name"), DEFAULT_VAE_DECODE)
    vae_element = DTYPES[run.vae.precision].itemsize
    held = frames if in_flight is None else min(in_flight, frames)
    output = frames * height * width * 3 * 4  # the decoded video/image, float32
    decode = int(per_pixel * height * width * held * vae_element) + output
    tile = _tile(vae_config, run)
    tiled = int(per_pixel * min(height, tile[0]) * min(width, tile[1]) * held * vae_element) + 2 * output
    tiled = max(tiled, int(TILED_SHARE_AT_LEAST.get(vae_config.get("_class_name"), 0) * decode))
    unmeasured = tuple(name for name, table in ((dit_config.get("_class_name"), ACTIVATION),
                                                (vae_config.get("_class_name"), VAE_DECODE)) if name not in table)
    text = max(TEXT_ACTIVATION_BY_CLASS.get((_read_config(folder, name).get("architectures") or [""])[0], TEXT_ACTIVATION)
               for name in ("text_encoder", "text_encoder_2"))
    return Activations(dit, decode, min(decode, tiled), unmeasured, text)


def _tile(vae_config: dict, run: RunConfig) -> tuple[int, int]:
    """The decode tile (height, width): the run's, else the VAE's own (AutoencoderKL tiles at its sample_size)."""
    if vae_config.get("_class_name") == "AutoencoderKL":
        side = int(vae_config.get("sample_size") or DEFAULT_TILE)
        return side, side
    return run.vae.tile_sample_min_height or DEFAULT_TILE, run.vae.tile_sample_min_width or DEFAULT_TILE


def phase_peaks(sizes: ModelSizes, acts: Activations, choice: Choice, text: Optional[int] = None) -> dict[str, int]:
    """The predicted peak of the text, denoise and decode phases under ``choice`` (bytes); ``text``: text encoding's
    activations (default: ``acts.text``)."""
    dit_total = sum(d.total for d in sizes.dits)
    kept = sizes.other + (0 if choice.text_encoder else sizes.text_encoders) + (0 if choice.vae else sizes.vae)
    if choice.dit == DitOffload.none:
        kept += dit_total
        dit_active = 0
    elif choice.dit == DitOffload.model:  # one expert in at a time
        dit_active = max(d.total for d in sizes.dits)
    else:
        dit_active = max(d.layerwise for d in sizes.dits)
    dequantized = max(d.largest_linear for d in sizes.dits)  # a GGUF layer's weight, dequantized as it runs
    return {
        "text": kept + (sizes.text_encoders if choice.text_encoder else 0) + (acts.text if text is None else text),
        "denoise": kept + dit_active + acts.dit + dequantized,
        "decode": kept + (sizes.vae if choice.vae else 0) + (acts.decode_tiled if choice.tiling else acts.decode),
    }


def usable(budget: int) -> int:
    """What of ``budget`` the plan's peak may use: the rest is headroom."""
    return int(budget - HEADROOM_FIXED - HEADROOM_SHARE * budget)


def choices(run: RunConfig, allowed_only: bool = True) -> list[Choice]:
    """Every placement the run allows, cheapest first: its explicit settings fixed, and (``allowed_only``) the
    combinations conflicts.py refuses left out."""
    o = run.offload
    options = itertools.product([o.text_encoder] if o.text_encoder is not None else [False, True],
                                [o.dit] if o.dit is not None else list(DitOffload),
                                [o.vae] if o.vae is not None else [False, True],
                                [run.vae.tiling] if run.vae.tiling is not None else [False, True])
    found = [Choice(bool(te), DitOffload(dit), bool(vae), bool(tiling)) for te, dit, vae, tiling in options]
    return sorted((c for c in found if not allowed_only or conflict(run, c) is None), key=lambda c: c.cost)


def conflict(run: RunConfig, choice: Choice) -> Optional[str]:
    """Why conflicts.py refuses ``run`` placed as ``choice`` (None: it does not)."""
    try:
        check_conflicts(MemoryPlan(choice, {}, 0).apply(run))
    except ConfigError as exc:
        return str(exc)
    return None


def given_keys(run: RunConfig) -> frozenset[str]:
    """The placement keys the run set itself."""
    keys = {"offload.text_encoder": run.offload.text_encoder, "offload.dit": run.offload.dit,
            "offload.vae": run.offload.vae, "vae.tiling": run.vae.tiling}
    return frozenset(k for k, v in keys.items() if v is not None)


def choose(sizes: ModelSizes, acts: Activations, budget: int, run: RunConfig) -> tuple[Optional[MemoryPlan], MemoryPlan]:
    """The cheapest allowed placement whose peak fits (None if none does), and the one with the lowest peak."""
    plans = [MemoryPlan(c, phase_peaks(sizes, acts, c), budget, given_keys(run)) for c in choices(run)]
    if not plans:  # only when the run's explicit settings conflict, which validation refused before
        raise UserError("no placement of this model is allowed by the run's settings", param="offload")
    fitting = [p for p in plans if p.peak <= usable(budget)]
    return (fitting[0] if fitting else None), min(plans, key=lambda p: (p.peak, p.choice.cost))


@dataclass
class Planner:
    """Plans for one model folder and run: sizes read once, activations per request size."""

    folder: Path
    run: RunConfig
    spec: FamilySpec
    sizes: ModelSizes
    warned: set = field(default_factory=set)  # request sizes already warned of (estimated figures)

    @classmethod
    def of(cls, folder: Path, run: RunConfig, download: bool = True) -> "Planner":
        header = None
        if run.model.dit_weights:
            from sgld.models.gguf import dit_weights_path, read_header

            header = read_header(dit_weights_path(run.model.dit_weights, download))
        spec = family_of_index(read_model_index(folder), str(folder))
        return cls(folder, run, spec, model_sizes(folder, run, header))

    def activations(self, req: Request, height: int, width: int, frames: int) -> Activations:
        return activations(self.spec, self.folder, self.run, req, height, width, frames)

    def _sized(self, req: Optional[Request]) -> tuple[Request, tuple[int, int, int], Activations]:
        """``req`` (default: the run's sampling), the size the plan takes for it, and its activations."""
        req = req or Request.from_sampling(self.run.sampling)
        size = request_size(self.spec, req, self.folder)
        return req, size, self.activations(req, *size)

    def choose(self, budget: int, req: Optional[Request] = None) -> tuple[Optional[MemoryPlan], MemoryPlan]:
        """The cheapest placement that fits ``req`` (default: the run's sampling) in ``budget`` (None: none), and the lowest."""
        _, _, acts = self._sized(req)
        return choose(self.sizes, acts, budget, self.run)

    def plan(self, budget: int, req: Optional[Request] = None) -> MemoryPlan:
        """The plan for ``req`` (default: the run's sampling) within ``budget`` bytes; a UserError naming what fits if none."""
        req, size, acts = self._sized(req)
        best, lowest = choose(self.sizes, acts, budget, self.run)
        if best is not None:
            return best
        if not self.runs_on_estimate(acts, budget, lowest):
            raise UserError(self._refusal(req, budget, lowest, *size), param="max_gpu_memory")
        if size not in self.warned:
            self.warned.add(size)
            log.warning("memory plan: %s, by an estimate (no measured activation figures for %s: bench/activations.py "
                        "measures them); the request runs", self._refusal(req, budget, lowest, *size),
                        ", ".join(acts.unmeasured))
        return lowest

    def runs_on_estimate(self, acts: Activations, budget: int, lowest: MemoryPlan) -> bool:
        """Whether a request that fits no placement runs anyway: a refusal must rest on measured figures, so with a
        guessed one (``acts.unmeasured``) it runs, warned of, while its weights fit, and the GPU decides."""
        return bool(acts.unmeasured) and self.weights_fit(budget, lowest)

    def weights(self, plan: MemoryPlan) -> int:
        """The most the weights alone take on the GPU at once under ``plan``'s placement (bytes)."""
        return max(phase_peaks(self.sizes, Activations(0, 0, 0), plan.choice, text=0).values())

    def weights_fit(self, budget: int, plan: MemoryPlan) -> bool:
        """Whether the weights alone fit ``budget`` under ``plan``'s placement (nothing runs otherwise)."""
        return self.weights(plan) <= usable(budget)

    def _refused_fit(self, req: Request, budget: int, height: int, width: int, frames: int) -> Optional[str]:
        """Why conflicts.py refuses the cheapest placement that would fit (None: none would)."""
        acts = self.activations(req, height, width, frames)
        for choice in choices(self.run, allowed_only=False):
            if max(phase_peaks(self.sizes, acts, choice).values()) <= usable(budget):
                return conflict(self.run, choice)
        return None

    def _fits(self, req: Request, budget: int, height: int, width: int, frames: int) -> bool:
        return choose(self.sizes, self.activations(req, height, width, frames), budget, self.run)[0] is not None

    def _refusal(self, req: Request, budget: int, lowest: MemoryPlan, height: int, width: int, frames: int) -> str:
        size = f"{width}x{height}" + (f", {frames} frames" if frames > 1 else "")
        head = (f"{size} needs ≈ {lowest.peak / GIB:.1f} GiB at its least ({lowest.describe().split(';')[0]}), "
                f"more than the {budget / GIB:.1f} GiB budget less {(budget - usable(budget)) / GIB:.1f} GiB headroom "
                "(--max-gpu-memory / offload.max_gpu_memory)")
        refused = self._refused_fit(req, budget, height, width, frames)
        tail = f" (a placement that would fit is refused: {refused.removesuffix('; choose one')})" if refused else ""
        if not self.weights_fit(budget, lowest):
            phases = phase_peaks(self.sizes, Activations(0, 0, 0), lowest.choice, text=0)
            why = {"text": "the text encoders come to the GPU whole to encode the prompt",
                   "denoise": "a smaller DiT (a GGUF file: --dit-weights) would take less",
                   "decode": "the VAE comes to the GPU whole to decode"}[max(phases, key=phases.get)]
            return (f"{head}: the weights alone take ≈ {self.weights(lowest) / GIB:.1f} GiB on the GPU at their least; "
                    f"{why}{tail}")
        hints = []
        constraints = self.spec.constraints_in_folder(self.folder)
        if frames > 1:
            t = constraints.temporal_factor
            fit = next((f for f in range(frames - 1, 0, -1) if (f - 1) % t == 0
                        and self._fits(req, budget, height, width, f)), None)
            if fit is not None:
                hints.append(f"{fit} frames at {width}x{height}")
        m = constraints.spatial_multiple
        for step in range(1, 40):
            scale = 1 - step * 0.025
            h, w = max(m, int(height * scale) // m * m), max(m, int(width * scale) // m * m)
            if self._fits(req, budget, h, w, frames):
                hints.append(f"{w}x{h}" + (f" at {frames} frames" if frames > 1 else ""))
                break
        fits = " or ".join(hints) if hints else "no smaller size of this model"
        return f"{head}; it would fit at {fits}{tail}"


def free_gpu_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now (the default budget)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def budget_bytes(run: RunConfig, device: Optional[torch.device]) -> int:
    """``offload.max_gpu_memory`` GiB, else ``device``'s free memory; a UserError when neither is known."""
    if run.offload.max_gpu_memory is not None:
        if run.offload.max_gpu_memory <= 0:
            raise UserError(f"max_gpu_memory={run.offload.max_gpu_memory} must be a positive number of GiB",
                            param="max_gpu_memory")
        return int(run.offload.max_gpu_memory * GIB)
    if device is not None and device.type == "cuda":
        return free_gpu_memory(device)
    raise UserError("no CUDA GPU here to read the free memory of: give --max-gpu-memory GiB", param="max_gpu_memory")


def plan_for_run(run: RunConfig, folder: Path, device: Optional[torch.device], download: bool = True) -> MemoryPlan:
    """The memory plan of ``run`` on ``device`` (its budget: ``offload.max_gpu_memory``, else the free memory)."""
    return Planner.of(folder, run, download).plan(budget_bytes(run, device))


@dataclass
class MemoryCheck:
    """A loaded model's placement and budget: each request's activations are held to them before it runs."""

    planner: Planner
    budget: int

    def check(self, req: Request) -> None:
        """Raise UserError, naming the frames or size that would fit, when ``req`` does not fit the placed model."""
        self.planner.plan(self.budget, req)


def check_run_fits(run: RunConfig, folder: Path) -> None:
    """Before loading a one-request run: refuse it (naming what would fit) when no placement fits it on its GPU."""
    from sgld.models.components import resolve_device

    device = resolve_device(run.device)
    if device.type == "cuda":
        plan_for_run(run, folder, device, run.model.download)


def place_for_load(run: RunConfig, folder: Path, device: torch.device) -> tuple[RunConfig, Optional[MemoryCheck]]:
    """``run`` with its unset placement decided by the plan (logged in one line) and the check its requests get.

    Off a GPU nothing is planned. Where the run's own size does not fit, the placement with the lowest peak is
    taken (a server's requests may be smaller; each is checked); weights that fit no placement are refused.
    """
    if device.type != "cuda":
        return run, None
    budget = budget_bytes(run, device)
    planner = Planner.of(folder, run, run.model.download)
    best, lowest = planner.choose(budget)
    plan = best or lowest
    if not planner.weights_fit(budget, lowest):
        planner.plan(budget)  # raises, saying what the weights need
    log.info("memory plan: %s", plan.describe())
    if best is None:
        log.warning("memory plan: the run's own size does not fit %.1f GiB; each request is checked before it runs",
                    budget / GIB)
    placed = plan.apply(run)
    return placed, MemoryCheck(Planner(folder, placed, planner.spec, planner.sizes), budget)


def plan_folder(run: RunConfig) -> tuple[Path, str]:
    """The folder whose configs the ``plan`` command reads, and a note on where they came from (nothing downloaded).

    A repo id missing from the Hugging Face cache is read from the released configs sgld ships for it
    (``random:<repo id>``), so a plan needs no download.
    """
    from sgld.model_builders.full_size import FULL_SIZE_MODELS
    from sgld.model_builders.random_weights import materialize_random
    from sgld.models.hub import cached_folder, looks_like_repo_id
    from sgld.models.registry import resolve_model_folder

    path = run.model.path
    if looks_like_repo_id(path) and not path.startswith("random:") and not Path(path).expanduser().is_dir():
        folder = cached_folder(path)
        if folder is not None:
            return folder, "from the Hugging Face cache"
        if path in FULL_SIZE_MODELS:
            return materialize_random(f"random:{path}"), "the released configs sgld ships, nothing downloaded"
        raise UserError(f"model {path!r} is not in the Hugging Face cache and sgld ships no configs for it; the plan "
                        "reads configs only: download it first or pass a local folder", param="model_path")
    return resolve_model_folder(path, download=False), ""


def plan_report(run: RunConfig) -> str:
    """What ``sgl-diffusion plan`` prints: the plan's line, then the sizes and phases it comes from (no weights loaded)."""
    folder, source = plan_folder(run)
    device = None
    if run.offload.max_gpu_memory is None and torch.cuda.is_available():
        device = torch.device("cuda", run.parallel.first_gpu)
    budget = budget_bytes(run, device)
    planner = Planner.of(folder, run, download=False)
    req, (height, width, frames), acts = planner._sized(None)
    size = f"{width}x{height}" + (f", {frames} frames" if frames > 1 else "")
    where = "--max-gpu-memory" if run.offload.max_gpu_memory is not None else "this GPU's free memory"
    lines = [f"{run.model.path} ({planner.spec.name}{', ' + source if source else ''}) at {size}; budget "
             f"{budget / GIB:.1f} GiB ({where}), {(budget - usable(budget)) / GIB:.1f} GiB of it headroom"]
    best, lowest = choose(planner.sizes, acts, budget, run)
    if best is None:
        runs = planner.runs_on_estimate(acts, budget, lowest)  # Planner.plan's verdict
        verdict = "over budget by an estimate, runs anyway: " if runs else "refused: "
        lines.append(verdict + planner._refusal(req, budget, lowest, height, width, frames))
        plan = lowest
    else:
        lines.append(best.describe())
        plan = best
    s = planner.sizes
    dits = ", ".join(f"{d.total / GIB:.1f} GiB (layer-wise {d.layerwise / GIB:.2f} GiB on the GPU)" for d in s.dits)
    lines.append(f"  weights: text encoders {s.text_encoders / GIB:.1f} GiB, DiT {dits}, VAE {s.vae / GIB:.2f} GiB"
                 + (f", other {s.other / GIB:.1f} GiB" if s.other else "")
                 + (f" (DiT from {Path(run.model.dit_weights).name})" if run.model.dit_weights else ""))
    lines.append(f"  activations: DiT forward {acts.dit / GIB:.2f} GiB, VAE decode {acts.decode / GIB:.2f} GiB "
                 f"(tiled {acts.decode_tiled / GIB:.2f} GiB)"
                 + (f"; estimated: no measured figures for {', '.join(acts.unmeasured)}, so requests are not refused"
                    " on them" if acts.unmeasured else ""))
    lines.append("  phases: " + ", ".join(f"{k} {v / GIB:.1f} GiB" for k, v in plan.phases.items()))
    decided = sorted({"offload.text_encoder", "offload.dit", "offload.vae", "vae.tiling"} - plan.given)
    lines.append(f"  the plan decides: {', '.join(decided) or 'nothing'}; given: {', '.join(sorted(plan.given)) or 'nothing'}")
    return "\n".join(lines)
