"""SGLang's diffusion flags that are not sgld options of their own, and what each does in sgld.

sgld's options (sgld.config.options) already use SGLang's names where the two mean the same. This table covers
every other flag of SGLang 0.5.23's ``serve`` and ``generate`` (``tests/test_sglang_suite.py`` walks SGLang's
parser, read from its wheel, against it), so none is an argparse error:

- MAP: sets the sgld option it means (``--dp 2`` -> dp_size, ``--component-residency vae=component-offload``
  -> vae_cpu_offload);
- NOOP: accepted with one log line saying why it changes nothing here (``--strict-ports``: sgld never moves to
  another port);
- REFUSE: exit 2 with "sgld does not support --flag (why)", unless the value is one that changes nothing
  (SGLang's default: ``--backend auto``, ``--nnodes 1``, ``--enable-cache-dit false``).

The SGLang command line sgld also understands: ``--flag true|false`` on every on/off option (SGLang's
StoreBoolean), underscores in flag names (``--num_gpus``), ``--model-type diffusion`` and a model path given as
``serve``'s first argument, and per-component flags (``--vae-path X``, ``--component-precisions.vae fp32``).
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from sgld.errors import UserError

log = logging.getLogger("sgld")

# How a flag takes its value, as SGLang's parser defines it.
VALUE, BOOL, SWITCH, MANY, ANY = "value", "bool", "switch", "many", "any"
MAP, NOOP, REFUSE = "map", "noop", "refuse"


class BoolFlag(argparse.Action):
    """An on/off flag as SGLang's StoreBoolean takes it: ``--x`` (on), ``--x true|false`` (any case); and ``--no-x``."""

    def __init__(self, option_strings, dest, negatable: bool = True, **kwargs):
        strings = list(option_strings)
        if negatable:
            strings += ["--no-" + s[2:] for s in option_strings if s.startswith("--") and not s.startswith("--no-")]
        kwargs.setdefault("metavar", "true|false")
        super().__init__(strings, dest, nargs="?", const=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None and option_string.startswith("--no-") and option_string not in self._plain:
            if values is not None:
                raise argparse.ArgumentError(self, f"{option_string} takes no value (got {values!r})")
            setattr(namespace, self.dest, False)
            return
        try:
            setattr(namespace, self.dest, True if values is None else parse_bool(values, option_string or self.dest))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None

    @property
    def _plain(self) -> set[str]:
        # Flags whose own name starts with --no- (SGLang's --no-override-protected-fields) are not negations.
        return {s for s in self.option_strings if s.startswith("--no-") and "--" + s[5:] not in self.option_strings}


def parse_bool(value: Any, flag: str) -> bool:
    """``true``/``false`` in any case (SGLang's StoreBoolean); anything else names the flag and the value."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{flag} takes true or false, got {value!r}")
    return low == "true"


@dataclass(frozen=True)
class SGLangFlag:
    """One SGLang flag sgld has no option of that name for: how it takes a value and what it does here."""

    names: tuple[str, ...]
    shape: str
    kind: str
    why: str = ""
    # REFUSE: values that change nothing here (SGLang's defaults), taken silently. BOOL flags: False always is.
    accept: tuple[Any, ...] = ()
    # MAP: (value, every SGLang flag given) -> {sgld option: value}; empty when the value needs nothing.
    to: Optional[Callable[[Any, Mapping[str, Any]], dict[str, Any]]] = None
    generate_only: bool = False

    @property
    def flag(self) -> str:
        return self.names[0]

    @property
    def dest(self) -> str:
        """Where argparse keeps its value (apart from sgld's option names)."""
        return "sglang:" + self.flag[2:]


def _opt(option: str, convert: Callable[[Any], Any] = lambda v: v) -> Callable[[Any, Mapping[str, Any]], dict]:
    return lambda value, given: {option: convert(value)}


def _number(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return kind(float(value)) if kind is int and "." in str(value) else kind(value)
        except ValueError:
            raise UserError(f"expected a number, got {value!r}") from None
    return convert


def _flags(kind: str, shape: str, why: str, *names: str, accept: tuple = (), to=None, generate_only=False) -> list:
    """One row per flag: each of ``names`` is its own flag (several spellings of one flag are a tuple)."""
    rows = []
    for name in names:
        spellings = name if isinstance(name, tuple) else (name,)
        rows.append(SGLangFlag(spellings, shape, kind, why, accept, to, generate_only))
    return rows


# -- what the mapped flags do -------------------------------------------------------------------------------

QUALITY_TO_COMPRESSION = {"maximum": 100, "high": 90, "medium": 55, "low": 35, "default": None}
ATTENTION = {"fa": "fa3", "fa3": "fa3", "flash_attn": "fa3", "flash_attention": "fa3", "sage_attn": "sage",
             "sage": "sage", "auto": "auto"}


def _attention(value: Any) -> str:
    name = str(value).strip().lower()
    if name not in ATTENTION:
        raise UserError(f"sgld does not support attention backend {value!r}; SGLang's names it maps: "
                        f"{', '.join(sorted(ATTENTION))} (or sgld's own --attention-backend values)",
                        param="attention_backend")
    return ATTENTION[name]


def _pairs(value: Any, flag: str) -> list[tuple[str, str]]:
    """``comp=value`` items (space- or comma-separated, as SGLang takes them)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    pairs = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            component, sep, setting = part.partition("=")
            if not sep or not component or not setting:
                raise UserError(f"{flag} takes component=value items, got {part!r}")
            pairs.append((component.strip().lower().replace("-", "_"), setting.strip()))
    return pairs


DIT_NAMES = ("transformer", "transformer_2", "dit")


def _component_attention(value: Any, given: Mapping) -> dict:
    out: dict = {}
    for component, backend in _pairs(value, "--component-attention-backends"):
        if component in DIT_NAMES:
            out["attention_backend"] = _attention(backend)
        else:
            log.info("--component-attention-backends %s=%s: no effect in sgld (its encoders and VAE run PyTorch's "
                     "SDPA)", component, backend)
    return out


# --component-residency's modes on the components sgld places -> the sgld option that places them so.
RESIDENCY = {
    ("text_encoder", "component-offload"): "text_encoder_cpu_offload",
    ("text_encoder", "layerwise-offload"): "text_encoder_cpu_offload",
    ("vae", "component-offload"): "vae_cpu_offload",
    ("dit", "component-offload"): "dit_cpu_offload",
    ("dit", "layerwise-offload"): "dit_layerwise_offload",
}


def _residency(value: Any, given: Mapping) -> dict:
    out: dict = {}
    for component, mode in _pairs(value, "--component-residency"):
        key = ("dit" if component in DIT_NAMES else component, mode.lower())
        if key[1] == "resident":
            continue
        option = RESIDENCY.get(key)
        if option is None:
            raise UserError(f"sgld does not support --component-residency {component}={mode} (it places the DiT, "
                            "the text encoder and the VAE: component-offload, layerwise-offload for the DiT, resident)")
        if key == ("text_encoder", "layerwise-offload"):
            log.info("--component-residency text_encoder=layerwise-offload runs as sgld's whole-encoder offload "
                     "(--text-encoder-cpu-offload): the encoder waits on the CPU and moves in for its stage")
        out[option] = True
    return out


def _offload_components(option_of: Mapping[str, str], flag: str) -> Callable[[Any, Mapping], dict]:
    def convert(value: Any, given: Mapping) -> dict:
        names = [n.lower().replace("-", "_") for item in value for n in str(item).replace(",", " ").split()]
        if "none" in names:
            return {}
        if "all" in names:
            names = list(option_of)
        out = {}
        for name in names:
            key = "dit" if name in DIT_NAMES else name
            if key not in option_of:
                raise UserError(f"sgld does not support {flag} {name} (it offloads: {', '.join(option_of)})")
            out[option_of[key]] = True
        return out
    return convert


def _warmup_sizes(value: Any, given: Mapping) -> dict:
    frames = given.get("sglang:warmup-num-frames")
    sizes = [str(size).lower().replace("*", "x") for item in value for size in str(item).replace(",", " ").split()]
    return {"warmup_sizes": [f"{size}x{int(frames)}" if frames else size for size in sizes]}


def _warmup_frames(value: Any, given: Mapping) -> dict:
    if not given.get("sglang:warmup-resolutions"):
        log.info("--warmup-num-frames %s: no effect in sgld without --warmup-resolutions (sgld warms up the model's "
                 "default size)", value)
    return {}


def _warmup_mode(value: Any, given: Mapping) -> dict:
    mode = str(value).lower()
    if mode == "off":
        return {"warmup_sizes": []}
    if mode not in ("server", "request", "auto"):
        raise UserError(f"--warmup-mode takes off, server or request, got {value!r}")
    if mode == "request":
        log.info("--warmup-mode request: sgld warms up at start-up (before /health says ok), never in a request")
    return {}


def _warmup_sampling_params(value: Any, given: Mapping) -> dict:
    try:
        params = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserError(f"--warmup-sampling-params must be a JSON object, got {value!r} ({exc.msg})") from None
    if not isinstance(params, dict):
        raise UserError(f"--warmup-sampling-params must be a JSON object, got {value!r}")
    out = {}
    width, height, frames = params.pop("width", None), params.pop("height", None), params.pop("num_frames", None)
    if width and height:
        out["warmup_sizes"] = [f"{int(width)}x{int(height)}" + (f"x{int(frames)}" if frames else "")]
    if params:
        log.info("--warmup-sampling-params %s: no effect in sgld (it has one numerical path, SGLang's quality "
                 "'exact', and warms up sizes only)", ", ".join(sorted(params)))
    return out


def _cfg_parallel_size(value: Any, given: Mapping) -> dict:
    size = _number(int)(value)
    if size not in (1, 2):
        raise UserError(f"sgld does not support --cfg-parallel-size {size} (its CFG has two branches: 1 or 2)")
    return {"enable_cfg_parallel": size == 2}


def _vae_decode_precision(value: Any, given: Mapping) -> dict:
    return {"vae_precision": str(value)}


def _output_quality(value: Any, given: Mapping) -> dict:
    level = str(value).lower()
    if level not in QUALITY_TO_COMPRESSION:
        raise UserError(f"--output-quality takes {', '.join(QUALITY_TO_COMPRESSION)}, got {value!r}")
    compression = QUALITY_TO_COMPRESSION[level]
    return {} if compression is None else {"output_compression": compression}


def _model_type(value: Any, given: Mapping) -> dict:
    if str(value).lower() not in ("diffusion", "auto"):
        raise UserError(f"sgld does not support --model-type {value} (it serves diffusion models only)")
    return {}


def _vae_config(key: str) -> Callable[[Any, Mapping], dict]:
    return lambda value, given: {"vae_config": {key: value}}


DISAGG = "no disaggregated serving: one process group runs every stage"
SPECTRUM = "no Spectrum step forecasting"
SR = "no super-resolution stage"
ACTION = "no action (VLA) or world models"
MINIMAX = "MiniMax-H3's online AdaLN rebuild and its host cache"
KV_QUANT = "no KV-cache quantization (sgld's families have no KV cache)"

TABLE: tuple[SGLangFlag, ...] = tuple(
    # -- mapped: the sgld option it means --------------------------------------------------------------------
    _flags(MAP, VALUE, "", "--model-type", to=_model_type)
    + _flags(MAP, VALUE, "", "--model-id", to=lambda v, g: {} if g.get("served_model_name") else {"served_model_name": v})
    + _flags(MAP, VALUE, "", "--sp-degree", to=_opt("sp_size", _number(int)))
    + _flags(MAP, VALUE, "", ("--data-parallel-size", "--dp-size", "--dp"), to=_opt("dp_size", _number(int)))
    + _flags(MAP, VALUE, "", "--cfg-parallel-size", to=_cfg_parallel_size)
    + _flags(MAP, VALUE, "", "--prompt-file-path", to=_opt("prompt_file"))
    + _flags(MAP, VALUE, "", "--prompt-path", to=_opt("prompt_file"), generate_only=True)
    + _flags(MAP, VALUE, "", "--dit-precision", to=_opt("precision"))
    + _flags(MAP, VALUE, "", "--vae-decode-precision", to=_vae_decode_precision)
    + _flags(MAP, VALUE, "", "--attention-backend-override", to=_opt("attention_backend", _attention),
             generate_only=True)
    + _flags(MAP, VALUE, "", "--component-attention-backends", to=_component_attention)
    + _flags(MAP, VALUE, "", "--embedded-cfg-scale", to=_opt("guidance_scale", _number(float)))
    + _flags(MAP, VALUE, "", "--batching-max-size", to=_opt("max_batch_size", _number(int)))
    + _flags(MAP, VALUE, "", "--batching-delay-ms", to=_opt("batch_wait_ms", lambda v: round(_number(float)(v))))
    + _flags(MAP, VALUE, "", "--http-graceful-shutdown-timeout", to=_opt("drain_s", _number(float)))
    + _flags(MAP, VALUE, "", "--warmup-sampling-params", to=_warmup_sampling_params)
    + _flags(MAP, VALUE, "", "--warmup-mode", to=_warmup_mode)
    + _flags(MAP, MANY, "", "--warmup-resolutions", to=_warmup_sizes)
    + _flags(MAP, VALUE, "", "--warmup-num-frames", to=_warmup_frames)
    + _flags(MAP, MANY, "", "--component-residency", to=_residency)
    + _flags(MAP, MANY, "", "--cpu-offload-components", to=_offload_components(
        {"dit": "dit_cpu_offload", "text_encoder": "text_encoder_cpu_offload", "vae": "vae_cpu_offload"},
        "--cpu-offload-components"))
    + _flags(MAP, MANY, "", ("--layerwise-offload-components", "--layerwise-offload-modules"), to=_offload_components(
        {"dit": "dit_layerwise_offload"}, "--layerwise-offload-components"))
    + _flags(MAP, ANY, "", "--uvicorn-access-log-exclude-prefixes", to=_opt("access_log_exclude_prefixes", list))
    + _flags(MAP, BOOL, "", "--vae-config.use-tiling", to=_opt("vae_tiling"))
    + _flags(MAP, BOOL, "", "--vae-config.use-parallel-tiling", "--vae-config.use-parallel-decode", to=_opt("vae_sp"))
    + _flags(MAP, BOOL, "", "--vae-config.load-encoder", to=_vae_config("load_encoder"))
    + _flags(MAP, BOOL, "", "--vae-config.load-decoder", to=_vae_config("load_decoder"))
    + _flags(MAP, VALUE, "", "--vae-config.tile-sample-min-height", to=lambda v, g: {"vae_config": {"tile_sample_min_height": _number(int)(v)}})
    + _flags(MAP, VALUE, "", "--vae-config.tile-sample-min-width", to=lambda v, g: {"vae_config": {"tile_sample_min_width": _number(int)(v)}})
    + _flags(MAP, VALUE, "", "--output-quality", to=_output_quality, generate_only=True)
    + _flags(MAP, VALUE, "", ("--num-outputs",), to=_opt("num_outputs_per_prompt", _number(int)), generate_only=True)
    + _flags(MAP, MANY, "", "--image-paths", to=lambda v, g: {"image_path": list(v)}, generate_only=True)
    # -- accepted, no effect here ----------------------------------------------------------------------------
    + _flags(NOOP, BOOL, "it only loads the diffusers layouts it knows and never runs a repository's code",
             "--trust-remote-code")
    + _flags(NOOP, VALUE, "it has no auto-tuner: placement is what the flags say", ("--performance-mode", "--mode"))
    + _flags(NOOP, BOOL, "NCCL's defaults are used", "--enable-nccl-nvls")
    + _flags(NOOP, MANY, "it does not pin processes to NUMA nodes", "--numa-node")
    + _flags(NOOP, VALUE, "it replicates the text encoders on every rank (or shards T5 with --tp-size)",
             "--encoder-parallel")
    + _flags(NOOP, VALUE, "it has no FSDP: every rank holds the weights", "--hsdp-replicate-dim", "--hsdp-shard-dim")
    + _flags(NOOP, VALUE, "its ranks take jobs over a queue, not a scheduler RPC", "--scheduler-rpc-timeout",
             "--scheduler-port")
    + _flags(NOOP, VALUE, "its rank group picks a free rendezvous port", "--master-port")
    + _flags(NOOP, VALUE, "collectives time out after parallel.timeout_s (600 s)", "--dist-timeout")
    + _flags(NOOP, BOOL, "it always compiles the DiT's repeated blocks (regional compile)", "--regional-compile")
    + _flags(NOOP, BOOL, "it compiles with the weights where they are placed", "--offload-during-compile")
    + _flags(NOOP, MANY, "it has no breakable CUDA graphs", "--bcg-text-buckets")
    + _flags(NOOP, BOOL, "it adds no NVTX markers", "--enable-layerwise-nvtx-marker")
    + _flags(NOOP, VALUE, "its warm-up runs 2 steps per size", "--warmup-steps")
    + _flags(NOOP, BOOL, "it loads weights the way its placement says", "--direct-gpu-weight-loading")
    + _flags(NOOP, VALUE, "its layer-wise offload prefetches the next block", "--dit-offload-prefetch-size",
             "--layerwise-prefetch-size")
    + _flags(NOOP, VALUE, "its layer-wise offload keeps no blocks resident", "--dit-layerwise-resident-layers",
             "--layerwise-resident-layers", "--layerwise-residency-policy", "--layerwise-residency-lifetime",
             "--dit-layerwise-residency-policy", "--dit-layerwise-residency-lifetime")
    + _flags(NOOP, BOOL, "it has no FSDP: every rank holds the weights, with the same output", "--use-fsdp-inference")
    + _flags(NOOP, BOOL, "it runs in the precisions set, without autocast", "--disable-autocast")
    + _flags(NOOP, VALUE, "it always batches queued requests that can share a forward", "--batching-mode")
    + _flags(NOOP, SWITCH, "/metrics has sgld's batch-size histogram", "--enable-batching-metrics")
    + _flags(NOOP, SWITCH, "an idle sgld worker waits on its queue", "--sleep-on-idle")
    + _flags(NOOP, SWITCH, "it writes each output atomically once it is decoded", "--async-output-save")
    + _flags(NOOP, BOOL, "/metrics is always on", "--enable-metrics")
    + _flags(NOOP, BOOL, "it never moves to another port: a busy port is an error", "--strict-ports")
    + _flags(NOOP, BOOL, "its browser UI is always at /playground on the server's port", "--webui")
    + _flags(NOOP, VALUE, "its browser UI is at /playground on the server's port", "--webui-port")
    + _flags(NOOP, VALUE, "uploaded inputs stay in <output path>/files until their job ends", "--input-save-path")
    + _flags(NOOP, BOOL, "it has no diffusion decoder (LTX-2.5)", "--diffusion-decoder-tiling",
             "--diffusion-decoder-parallel-tiling")
    + _flags(NOOP, BOOL, "it decodes a batch in one VAE call", "--vae-slicing")
    + _flags(NOOP, VALUE, "its tiled VAE decode uses diffusers' tile sizes", "--vae-config.tile-sample-min-num-frames",
             "--vae-config.tile-sample-stride-height", "--vae-config.tile-sample-stride-width",
             "--vae-config.tile-sample-stride-num-frames", "--vae-config.blend-num-frames",
             "--vae-config.parallel-decode-mode")
    + _flags(NOOP, BOOL, "its tiled VAE decode uses diffusers' tiling", "--vae-config.use-temporal-tiling")
    + _flags(NOOP, VALUE, "it picks the compile mode", "--dit-config.torch-compile-mode")
    + _flags(NOOP, SWITCH, "it has no OpenTelemetry tracing", "--enable-trace")
    + _flags(NOOP, VALUE, "it has no OpenTelemetry tracing", "--otlp-traces-endpoint", "--otlp-service-name")
    + _flags(NOOP, SWITCH, "it logs every request (method, path, status, request_id)", "--log-requests")
    + _flags(NOOP, VALUE, "it logs every request (method, path, status, request_id)", "--log-requests-level",
             "--log-requests-format")
    + _flags(NOOP, MANY, "it logs requests to its log", "--log-requests-target")
    + _flags(NOOP, SWITCH, "it has no prefix cache to report on", "--enable-cache-report")
    + _flags(NOOP, SWITCH, "it keeps no conditioning cache", "--disable-conditioning-cache")
    + _flags(NOOP, VALUE, "it keeps no conditioning cache", "--conditioning-cache-max-size-mb")
    + _flags(NOOP, VALUE, "only serve runs a server", "--host", "--port", "--served-model-name", generate_only=True)
    + _flags(NOOP, MANY, "the model decides whether it makes images or videos", "--data-type", generate_only=True)
    + _flags(NOOP, VALUE, "the model decides its task", "--task-type", generate_only=True)
    + _flags(NOOP, VALUE, "it has one numerical path (SGLang's quality 'exact')", "--quality", generate_only=True)
    + _flags(NOOP, VALUE, "it draws the noise on the CPU: a seed gives the same output on any device",
             "--generator-device", generate_only=True)
    + _flags(NOOP, SWITCH, "it has no built-in profiler run; use bench/", "--profile", "--profile-all-stages",
             "--debug", generate_only=True)
    + _flags(NOOP, VALUE, "it has no built-in profiler run; use bench/", "--num-profiled-timesteps",
             generate_only=True)
    + _flags(NOOP, SWITCH, "it takes the options given", "--no-override-protected-fields", generate_only=True)
    + _flags(NOOP, BOOL, "it prints where each output went", "--return-file-paths-only", generate_only=True)
    + _flags(NOOP, BOOL, "it splits sequences with --ulysses-degree / --ring-degree", "--enable-sequence-shard",
             generate_only=True)
    + _flags(NOOP, BOOL, "it uses the nearest frame count the model takes", "--adjust-frames", generate_only=True)
    # -- refused unless the value changes nothing ------------------------------------------------------------
    + _flags(REFUSE, VALUE, "it reads the diffusers folder layout", "--model-subfolder", accept=("",))
    + _flags(REFUSE, VALUE, "semantic checkpoint variants", "--model-variant", accept=("",))
    + _flags(REFUSE, BOOL, MINIMAX, "--minimax-h3-adaln-online")
    + _flags(REFUSE, VALUE, MINIMAX, "--minimax-h3-adaln-plan-width", "--minimax-h3-adaln-host-cache-gb",
             "--minimax-h3-adaln-cache-path")
    + _flags(REFUSE, VALUE, "it picks the pipeline from model_index.json", ("--pipeline", "--pipeline-class-name"))
    + _flags(REFUSE, BOOL, "no diffusion decoder (LTX-2.5)", "--load-diffusion-decoder")
    + _flags(REFUSE, VALUE, "attention backend configs", "--attention-backend-config")
    + _flags(REFUSE, VALUE, "it downloads a repo's main revision", "--revision", accept=("main",))
    + _flags(REFUSE, VALUE, "GPUs are chosen with CUDA_VISIBLE_DEVICES", "--base-gpu-id", accept=("0",))
    + _flags(REFUSE, MANY, "GPUs are chosen with CUDA_VISIBLE_DEVICES", "--gpu-ids")
    + _flags(REFUSE, VALUE, "it runs on one host", "--nnodes", accept=("1",))
    + _flags(REFUSE, VALUE, "it runs on one host", "--node-rank", accept=("0",))
    + _flags(REFUSE, VALUE, "it runs on one host", "--dist-init-addr")
    + _flags(REFUSE, VALUE, "KV gathering", "--kv-gather-degree", accept=("1",))
    + _flags(REFUSE, VALUE, DISAGG, "--disagg-role", accept=("monolithic",))
    + _flags(REFUSE, VALUE, DISAGG, "--disagg-timeout", "--disagg-downstream-wait-timeout", "--disagg-dispatch-policy",
             "--disagg-instance-id", "--disagg-max-slots-per-instance", "--disagg-transfer-redundancy",
             "--disagg-role-device", "--disagg-transfer-backend", "--disagg-transfer-pool-size",
             "--disagg-transfer-pin-memory", "--disagg-p2p-hostname", "--disagg-ib-device", "--disagg-server-addr",
             "--encoder-urls", "--prompt-encoder-urls", "--image-encoder-urls", "--denoiser-urls", "--decoder-urls",
             "--encoder-tp", "--denoiser-tp", "--denoiser-sp", "--denoiser-ulysses", "--denoiser-ring", "--decoder-sp")
    + _flags(REFUSE, BOOL, "it keeps PyTorch's default matmul precision", "--allow-cudnn-tf32",
             "--allow-bf16-reduced-precision-reduction")
    + _flags(REFUSE, BOOL, "breakable CUDA graphs; its own --cuda-graphs replays the whole DiT forward per shape",
             "--enable-breakable-cuda-graph")
    + _flags(REFUSE, BOOL, "image encoder offload on its own; --text-encoder-cpu-offload places the encoders",
             "--image-encoder-cpu-offload")
    + _flags(REFUSE, VALUE, "LTX-2's two-stage device modes", "--ltx2-two-stage-device-mode")
    + _flags(REFUSE, VALUE, KV_QUANT, "--kv-cache-quant", accept=("off",))
    + _flags(REFUSE, VALUE, KV_QUANT, "--kv-cache-quant-centroids", "--kv-cache-quant-block-size",
             "--kv-cache-quant-stages", "--kv-cache-quant-iters", "--kv-cache-quant-keep-recent",
             "--kv-cache-quant-sink", "--kv-cache-quant-sink-keep")
    + _flags(REFUSE, SWITCH, KV_QUANT, "--kv-cache-quant-asymmetric")
    + _flags(REFUSE, MANY, "quantization ignore lists (its --quantization fp8 covers the DiT blocks' linears)",
             "--quantization-ignored-layers")
    + _flags(REFUSE, BOOL, "Nunchaku SVDQuant", "--enable-svdquant", "--quantization-act-unsigned")
    + _flags(REFUSE, VALUE, "Nunchaku SVDQuant or replacement DiT weights", "--transformer-weights-path",
             "--quantization-precision", "--quantization-rank")
    + _flags(REFUSE, VALUE, "batching configs (--max-batch-size and --batch-wait-ms set batching)", "--batching-config")
    + _flags(REFUSE, VALUE, "LoRA alpha overrides (it reads the adapter's own)", "--lora-alpha")
    + _flags(REFUSE, VALUE, "pipeline config files", "--pipeline-config-path")
    + _flags(REFUSE, VALUE, "scheduler overrides (each family runs its reference scheduler)", "--scheduler-class-override")
    + _flags(REFUSE, VALUE, "SANA", "--resolution", "--num-frame-per-block")
    + _flags(REFUSE, BOOL, "SANA-WM streaming", "--streaming", "--refiner-chunked")
    + _flags(REFUSE, VALUE, "a separate image encoder precision", "--image-encoder-precision")
    + _flags(REFUSE, VALUE, "DMD or realtime causal models", "--dmd-denoising-steps", "--realtime-causal-sink-size",
             "--realtime-causal-kv-cache-num-frames")
    + _flags(REFUSE, VALUE, "DiT config overrides", "--dit-config.prefix", "--dit-config.quant-config")
    + _flags(REFUSE, VALUE, "other backends: it runs its own pipelines", "--backend", accept=("auto", "sglang"))
    + _flags(REFUSE, VALUE, "external encoders or prompt enhancers", "--srt-encoder-url",
             "--srt-encoder-connection-timeout", "--srt-encoder-timeout", "--pe-server-url", "--prompt-enhancer-config")
    # generate's sampling flags
    + _flags(REFUSE, SWITCH, "a diffusion decoder (LTX-2.5)", "--use-diffusion-decoder", generate_only=True)
    + _flags(REFUSE, SWITCH, "automatic durations", "--auto-duration", generate_only=True)
    + _flags(REFUSE, VALUE, "automatic durations", "--auto-duration-min-seconds", "--auto-duration-max-seconds",
             generate_only=True)
    + _flags(REFUSE, SWITCH, "rounding frame counts down (it takes the nearest count the model allows)",
             "--num-frames-round-down", generate_only=True)
    + _flags(REFUSE, VALUE, "CFG gating", "--cfg-gate-step", generate_only=True)
    + _flags(REFUSE, SWITCH, SPECTRUM, "--enable-spectrum", generate_only=True)
    + _flags(REFUSE, VALUE, SPECTRUM, "--w", ("--taylor-order", "--taylor_order"), ("--history-size", "--history_size"),
             ("--spectrum-window-size", "--spectrum_window_size", "--window-size", "--window_size"),
             ("--spectrum-flex-window", "--spectrum_flex_window", "--flex-window", "--flex_window"),
             ("--spectrum-warmup-steps", "--spectrum_warmup_steps"), ("--spectrum-m", "--spectrum_m"),
             ("--spectrum-lam", "--spectrum_lam"), ("--spectrum-tau-num-steps", "--spectrum_tau_num_steps"),
             generate_only=True)
    + _flags(REFUSE, BOOL, "CFG renormalization", "--enable-cfg-renorm", generate_only=True)
    + _flags(REFUSE, VALUE, "CFG renormalization", "--cfg-renorm-min", generate_only=True)
    + _flags(REFUSE, BOOL, "prompt rewriting", "--enable-prompt-rewrite", generate_only=True)
    + _flags(REFUSE, VALUE, "progressive sampling", "--progressive-mode", "--progressive-levels", "--progressive-delta",
             generate_only=True)
    + _flags(REFUSE, VALUE, "audio durations", "--sound-duration", generate_only=True)
    + _flags(REFUSE, SWITCH, "resolution presets (give --width and --height)", "--4k", "--2k", "--1080p", "--720p",
             generate_only=True)
    + _flags(REFUSE, VALUE, "true-CFG scales apart from --guidance-scale (which is true CFG on Qwen-Image)",
             "--true-cfg-scale", generate_only=True)
    + _flags(REFUSE, VALUE, "guidance rescaling or CFG normalization", "--guidance-rescale", "--cfg-normalization",
             generate_only=True)
    + _flags(REFUSE, VALUE, "moving Wan2.2's expert boundary (it runs the model's own)", "--boundary-ratio",
             generate_only=True)
    + _flags(REFUSE, VALUE, ACTION, "--action", ("--translation-speed", "--translation_speed"),
             ("--rotation-speed-deg", "--rotation_speed_deg"), ("--pitch-limit-deg", "--pitch_limit_deg"),
             "--action-mode", "--domain-id", "--domain-name", "--raw-action-dim", "--action-fps", "--bot-task",
             generate_only=True)
    + _flags(REFUSE, MANY, "video inputs (no video-to-video family)", "--video-path", generate_only=True)
    + _flags(REFUSE, VALUE, SR, "--sr-resolution-scale", "--sr-num-steps", "--sr-tiles-batch-size",
             "--sr-tile-min-overlap", "--sr-target-resolution", "--sr-target-resize-mode", generate_only=True)
    + _flags(REFUSE, VALUE, "MoBA attention configs", "--moba-config-path", generate_only=True)
    + _flags(REFUSE, SWITCH, "returning trajectories", "--return-trajectory-latents", "--return-trajectory-decoded",
             generate_only=True)
    + _flags(REFUSE, VALUE, "diffusers keyword overrides", "--diffusers-kwargs", generate_only=True)
    + _flags(REFUSE, VALUE, "system prompts", "--system-prompt", generate_only=True)
    + _flags(REFUSE, VALUE, "text encoder configs (SGLang has not implemented them either)", "--text-encoder-configs",
             generate_only=True)
)

BY_FLAG = {name: flag for flag in TABLE for name in flag.names}

# Per-component flags SGLang takes beyond its parser (ServerArgs.from_cli_args): --<component>-path V,
# --component-paths.<c> V, --<component>-weights-path, --component-precisions.<c>, ...
COMPONENT = (r"(?:transformer(?:-2)?|dit|vae|audio-vae|text-encoder(?:-\d)?|tokenizer(?:-\d)?|image-encoder|"
             r"image-processor|processor|feature-extractor|scheduler|vocoder|connectors|(?:latent-)?upsampler)")
COMPONENT_FLAG = re.compile(rf"^--(?:component-[\w-]+\.[\w-]+|{COMPONENT}-(?:weights-path|path|quantization))$")


def add_to_parser(parser: argparse.ArgumentParser, command: str, taken: Iterable[str]) -> None:
    """Add every SGLang flag ``command`` takes that sgld's own options (``taken``) do not already define."""
    taken = set(taken)
    for flag in TABLE:
        if flag.generate_only and command != "generate":
            continue
        names = [n for n in flag.names if n not in taken]
        if not names:
            continue
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": argparse.SUPPRESS}
        if flag.shape == BOOL:
            parser.add_argument(*names, action=BoolFlag, negatable=False, **kwargs)
        elif flag.shape == SWITCH:
            parser.add_argument(*names, action="store_true", **{**kwargs, "default": None})
        else:
            nargs = {MANY: "+", ANY: "*"}.get(flag.shape)
            parser.add_argument(*names, nargs=nargs, **kwargs)


def normalize_argv(argv: list[str]) -> list[str]:
    """SGLang's spellings before parsing: ``--a_b`` is ``--a-b``; ``serve MODEL`` is ``serve --model-path MODEL``."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg.partition("=")
            arg = key.replace("_", "-") + sep + value
        out.append(arg)
    if len(out) >= 2 and out[0] in ("serve", "generate") and not out[1].startswith("-"):
        out[1:2] = ["--model-path", out[1]]
    return out


def component_options(extras: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Options from SGLang's per-component flags among argparse's leftovers, and what is left (unknown flags).

    The DiT's attention backend and the DiT / VAE precisions map to sgld's options; any other per-component
    override (``--vae-path``, ``--transformer-path``, ...) is refused: sgld loads a model folder as a whole.
    """
    options: dict[str, Any] = {}
    left: list[str] = []
    i = 0
    while i < len(extras):
        arg = extras[i]
        key, sep, value = arg.partition("=")
        if not COMPONENT_FLAG.match(key):
            left.append(arg)
            i += 1
            continue
        if not sep and i + 1 < len(extras) and not extras[i + 1].startswith("-"):
            value = extras[i + 1]
            i += 1
        i += 1
        kind, _, component = key[2:].partition(".")
        component = component.replace("-", "_")
        if kind == "component-attention-backends" and component in DIT_NAMES:
            options["attention_backend"] = _attention(value)
        elif kind == "component-precisions" and component in DIT_NAMES + ("vae",):
            options["precision" if component != "vae" else "vae_precision"] = value
        else:
            raise UserError(f"sgld does not support per-component overrides ({key}): it loads the model folder's "
                            "own components", param=key[2:])
    return options, left


def resolve(values: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The sgld options the SGLang flags given (``values``: flag dest -> parsed value) set, after logging the ones
    with no effect and refusing the ones sgld does not support. ``options``: the sgld options given (they win)."""
    given = {**options, **{dest: value for dest, value in values.items() if value is not None}}
    out: dict[str, Any] = {}
    for flag in TABLE:
        value = values.get(flag.dest)
        if value is None:
            continue
        if flag.kind == NOOP:
            log.info("%s: no effect in sgld (%s)", flag.flag, flag.why)
        elif flag.kind == REFUSE:
            if value is False or (flag.shape == VALUE and str(value) in flag.accept):
                continue
            shown = "" if flag.shape in (BOOL, SWITCH) else " " + (" ".join(value) if isinstance(value, list) else str(value))
            raise UserError(f"sgld does not support {flag.flag}{shown} ({flag.why})", param=flag.flag[2:])
        else:
            try:
                mapped = flag.to(value, given)
            except UserError as exc:
                raise UserError(str(exc) if flag.flag in str(exc) else f"{flag.flag}: {exc}", param=flag.flag[2:]) from None
            for name, setting in mapped.items():
                if name == "vae_config":
                    out.setdefault("vae_config", {}).update(setting)
                elif options.get(name) is None:
                    out[name] = setting
    return out
