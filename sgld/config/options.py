"""SGLang-style option names and the one config key each maps to.

The same table serves the ``sgl-diffusion`` flags (``--num-gpus``), the keys of a
``--config`` JSON/YAML file (``num_gpus``) and the keyword arguments of the Python API
(``DiffGenerator.from_pretrained(..., num_gpus=2)``). No torch imports here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sgld.config.schema import (
    AttentionBackend, AudioOutput, CacheKind, DitOffload, LogLevel, LoraMergeMode, LoraTarget, Precision,
    Quantization, X264Preset, choices,
)
from sgld.errors import UserError

# Sections say what takes an option: SERVER the loaded engine (from_pretrained / the run), SAMPLING and OUTPUT
# each request too, HTTP only ``serve``.
SERVER, SAMPLING, OUTPUT, HTTP = "server", "sampling", "output", "http"

# --help headings of the engine options (SERVER), by what they set; the other sections are headings of their own.
MODEL, PARALLEL, MEMORY, PROMPT_SETS = "model", "parallelism", "memory and offload", "prompt sets"


@dataclass(frozen=True)
class Option:
    """One option: its name (flag ``--name-with-dashes``), config key, type and help."""

    name: str
    key: str
    type: type
    help: str
    section: str
    choices: tuple[str, ...] = ()
    many: bool = False  # a list of values
    # Repeatable on the command line (--lora-path a --lora-path b, or --lora-path a b); implies many.
    repeat: bool = False
    # Repeatable, but one value stays a value (a list only when given several times): --image-path.
    several: bool = False
    # A switch that sets a choice key: on sets ``key`` to ``value``; off leaves it to the other switches of that
    # key, or their "none" when none is on (--dit-cpu-offload / --dit-layerwise-offload -> offload.dit).
    value: str | None = None
    # An option that is shorthand for several keys (SGLang's --output-file-path: directory and file name):
    # value -> {key: value}; other options may set those keys too only when they agree (a file name it overrides).
    splits: Callable[[Any], dict[str, Any]] | None = None
    # Other command-line spellings of the same option (a bool alias gets its --no- form too).
    aliases: tuple[str, ...] = ()
    # The --help heading of a SERVER option (MODEL, PARALLEL, MEMORY, PROMPT_SETS).
    group: str = ""
    # Only ``generate`` takes it (prompt sets, output file names): ``serve`` lists and takes it not.
    generate_only: bool = False

    @property
    def flag(self) -> str:
        """The command-line spelling."""
        return "--" + self.name.replace("_", "-")


def json_object(value: Any) -> dict:
    """A JSON object given as text (a flag) or as a mapping (a config file, the API)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    return value


def split_output_file_path(value: Any) -> dict[str, Any]:
    """``outputs/fox.mp4`` -> output.path ``outputs``, output.file_name ``fox.mp4`` (no file name: an error)."""
    if not isinstance(value, str) or not value.strip() or value.endswith(("/", "\\")) or Path(value).name in ("", ".", ".."):
        raise UserError(f"output_file_path={value!r} must name a file, e.g. outputs/fox.mp4", param="output_file_path")
    path = Path(value).expanduser()
    return {"output.path": str(path.parent), "output.file_name": path.name}


def _same_setting(key: str, a: Any, b: Any) -> bool:
    if key == "output.path":  # "outputs", "./outputs" and "outputs/" are one directory
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    return a == b


OPTIONS: tuple[Option, ...] = (
    Option("model_path", "model.path", str, "a model sgld knows by name (listed at the end), a local diffusers folder, or a Hugging Face repo id (from the local HF cache, else downloaded: only configs, safetensors and tokenizer files)", SERVER, group=MODEL),
    Option("download", "model.download", bool, "download a Hugging Face repo id missing from the local cache (--no-download: the cache only, as HF_HUB_OFFLINE=1)", SERVER, group=MODEL),
    Option("num_gpus", "parallel.num_gpus", int, "number of processes (GPUs; on a CPU-only machine, gloo processes)", SERVER, group=PARALLEL),
    Option("tp_size", "parallel.tp_size", int, "tensor parallel size of the text encoder", SERVER, group=PARALLEL),
    Option("sp_size", "parallel.sp_size", int, "sequence parallel size (= ulysses_degree x ring_degree)", SERVER, group=PARALLEL),
    Option("ulysses_degree", "parallel.ulysses_degree", int, "Ulysses (all-to-all) degree of sequence parallelism", SERVER, group=PARALLEL),
    Option("ring_degree", "parallel.ring_degree", int, "ring-attention degree of sequence parallelism", SERVER, group=PARALLEL),
    Option("enable_cfg_parallel", "parallel.enable_cfg_parallel", bool, "run the conditional and unconditional branches on different ranks", SERVER, group=PARALLEL),
    Option("text_encoder_cpu_offload", "offload.text_encoder", bool, "keep the text encoder on the CPU between uses (unset: the memory plan decides)", SERVER, group=MEMORY),
    Option("dit_cpu_offload", "offload.dit", bool, "keep the DiT on the CPU between uses (offload.dit=model; unset: the memory plan decides)", SERVER, value=DitOffload.model.value, group=MEMORY),
    Option("dit_layerwise_offload", "offload.dit", bool, "keep the DiT's blocks on the CPU and copy each in as it runs, the next one prefetched (offload.dit=layerwise; unset: the memory plan decides)", SERVER, value=DitOffload.layerwise.value, group=MEMORY),
    Option("vae_cpu_offload", "offload.vae", bool, "keep the VAE on the CPU between uses (unset: the memory plan decides)", SERVER, group=MEMORY),
    Option("max_gpu_memory", "offload.max_gpu_memory", float, "GiB of GPU memory the memory plan fits the run into: it decides the offload and VAE tiling left unset, and refuses sizes whose activations cannot fit (unset: the card's free memory)", SERVER, group=MEMORY),
    Option("pin_cpu_memory", "offload.pin_cpu_memory", bool, "pin offloaded weights for faster transfers", SERVER, group=MEMORY),
    Option("precision", "model.precision", str, "DiT precision", SERVER, choices(Precision), group=MODEL),
    Option("text_encoder_precisions", "model.text_encoder_precisions", str, "one precision per text encoder", SERVER, choices(Precision), many=True, group=MODEL),
    Option("vae_precision", "vae.precision", str, "VAE precision", SERVER, choices(Precision), group=MODEL),
    Option("vae_tiling", "vae.tiling", bool, "decode the VAE in tiles (less memory; unset: the memory plan decides)", SERVER, group=MEMORY),
    Option("vae_sp", "vae.sp", bool, "split VAE decode tiles across ranks", SERVER, group=PARALLEL),
    Option("attention_backend", "model.attention_backend", str, "attention kernel: auto (FlashAttention-3 where installed on Hopper, else SDPA), fa3, fa3_fp8 (FlashAttention-3's FP8 forward, lossy), sage (8-bit, lossy), cudnn, flash, efficient, math", SERVER, choices(AttentionBackend), group=MODEL),
    Option("enable_torch_compile", "model.enable_torch_compile", bool, "torch.compile the repeated transformer blocks; unset: on for serve on a GPU, off for generate (--no-torch-compile: off)", SERVER, aliases=("torch_compile",), group=MODEL),
    Option("cache", "cache.kind", str, "step cache requests run with (lossy speed-up): first_block, cache_dit (the cache-dit package), teacache; unset: cache_dit with --cache-dit-config or SGLANG_CACHE_DIT_ENABLED=true, else none", SERVER, choices(CacheKind), group=MODEL),
    Option("cache_dit_config", "cache.cache_dit_config", str, "Cache-DiT settings: a YAML/JSON file in cache-dit's format (cache_config: Fn_compute_blocks, residual_diff_threshold, ...); turns Cache-DiT on by default; unset: SGLang's SGLANG_CACHE_DIT_* settings", SERVER, group=MODEL),
    Option("teacache_thresh", "cache.teacache_thresh", float, "TeaCache: skip a forward while the accumulated rescaled relative L1 change of the modulated input stays below this (0: never skip); unset: the model's published default", SERVER, group=MODEL),
    Option("quantization", "model.quantization", str, "fp8: the DiT blocks' linear layers in float8 (lossy speed-up, FP8 GPUs)", SERVER, choices(Quantization), group=MODEL),
    Option("cuda_graphs", "model.cuda_graphs", bool, "replay the whole DiT forward as a CUDA graph per input shape (lossless; saves the host time between kernels)", SERVER, group=MODEL),
    Option("cache_threshold", "cache.first_block_threshold", float, "first_block cache: relative change below which blocks are skipped", SERVER, group=MODEL),
    Option("lora_path", "model.loras", str, "LoRA adapter: a .safetensors file or a folder holding one (diffusers/PEFT or Kohya layout); repeat for several", SERVER, many=True, repeat=True, group=MODEL),
    Option("lora_scale", "model.loras", float, "strength of each --lora-path, in the same order (one value: all)", SERVER, many=True, repeat=True, group=MODEL),
    Option("lora_target", "model.loras", str, "the DiT each --lora-path goes into (Wan2.2 A14B: transformer, transformer_2 or all; MiniMax-H3: transformer, transformer_ref (ref2va) or all; one value: all)", SERVER, choices(LoraTarget), many=True, repeat=True, group=MODEL),
    Option("lora_nickname", "model.loras", str, "name of each --lora-path", SERVER, many=True, repeat=True, group=MODEL),
    Option("lora_weight_name", "model.loras", str, "the .safetensors file to take from each --lora-path folder (or org/repo) that holds several", SERVER, group=MODEL),
    Option("lora_merge_mode", "model.lora_merge_mode", str, "merge: fuse the adapters into the weights (no per-step cost); dynamic: keep them separate so requests can switch them; auto: merge unless the server has --lora-dir", SERVER, choices(LoraMergeMode), group=MODEL),
    Option("workflows", "model.workflows", str, "MiniMax-H3: the workflows to load the DiT partitions for (t2va, fl2va: transformer/; ref2va: transformer_ref/); unset: ref2va when --reference-image is given, else t2va and fl2va", SERVER, ("t2va", "fl2va", "ref2va"), many=True, group=MODEL),
    Option("dit_weights", "model.dit_weights", str, "a GGUF file (or org/repo/file.gguf on the Hugging Face Hub) whose quantized weights replace the DiT's (Q8_0, Q4_K...); the rest of the model folder stays", SERVER, group=MODEL),
    Option("mask_strategy_file_path", "model.mask_strategy_file_path", str, "sliding-tile attention: FastVideo mask-strategy JSON (HunyuanVideo); unset: dense attention", SERVER, group=MODEL),
    Option("allow_private_urls", "server.allow_private_urls", bool, "fetch input images named by URL from private, loopback and link-local addresses too (also SGLD_ALLOW_PRIVATE_URLS=1); off: public addresses only", SERVER, group=MODEL),
    Option("device", "device", str, "torch device: auto, cpu, cuda, cuda:N", SERVER, group=MODEL),
    Option("log_level", "log_level", str, "how much sgld logs: debug, info, warning, error, critical (other libraries stay at warning or above)", SERVER, choices(LogLevel), group=MODEL),
    Option("prompt", "sampling.prompt", str, "text description of the output", SAMPLING),
    Option("negative_prompt", "sampling.negative_prompt", str, "what to steer away from", SAMPLING),
    Option("num_inference_steps", "sampling.num_inference_steps", int, "denoising steps", SAMPLING),
    Option("guidance_scale", "sampling.guidance_scale", float, "guidance scale: CFG for Wan, true-CFG for Qwen-Image, distilled guidance for FLUX", SAMPLING),
    Option("guidance_scale_2", "sampling.guidance_scale_2", float, "guidance of the low-noise expert (Wan2.2 A14B)", SAMPLING),
    Option("audio_guidance_scale", "sampling.audio_guidance_scale", float, "guidance of the sound (models with sound: LTX-2; 0: same as --guidance-scale)", SAMPLING),
    Option("two_stage", "sampling.two_stage", bool, "LTX-2: stage 1 at half size, the latent upsampler, then a 3-step refine with the distilled LoRA", SAMPLING),
    Option("seed", "sampling.seed", int, "random seed", SAMPLING),
    Option("height", "sampling.height", int, "output height in pixels", SAMPLING),
    Option("width", "sampling.width", int, "output width in pixels", SAMPLING),
    Option("num_frames", "sampling.num_frames", int, "number of video frames", SAMPLING),
    Option("fps", "sampling.fps", int, "frames per second of the saved video", SAMPLING),
    Option("flow_shift", "sampling.flow_shift", float, "flow-matching shift of the scheduler", SAMPLING),
    Option("enable_cache_dit", "sampling.enable_cache_dit", bool, "Cache-DiT for this run or request (--no-enable-cache-dit: off); unset: the run's --cache", SAMPLING),
    Option("cache_dit_params", "sampling.cache_dit_params", json_object, "Cache-DiT knobs over the run's, as JSON (SGLang's names: Fn_compute_blocks, Bn_compute_blocks, max_warmup_steps, residual_diff_threshold, max_continuous_cached_steps, enable_taylorseer, taylorseer_order, scm_preset, ...)", SAMPLING),
    Option("enable_teacache", "sampling.enable_teacache", bool, "TeaCache for this run or request (--no-enable-teacache: off); unset: the run's --cache", SAMPLING),
    Option("image_path", "sampling.image_path", str, "input image (image-to-video and edit models); give it several times for models that take several (Qwen-Image-Edit-Plus)", SAMPLING, several=True),
    Option("last_image_path", "sampling.last_image_path", str, "last keyframe of the video (MiniMax-H3 fl2va; --image-path is the first)", SAMPLING),
    Option("reference_image", "sampling.reference_images", str, "reference image of MiniMax-H3's ref2va workflow (repeat for several, at most 9, read in the order given)", SAMPLING, many=True, repeat=True),
    Option("prompt_file", "sampling.prompts_file", str, "prompt set: a text file (one prompt per line) or JSONL with per-line overrides", SERVER, group=PROMPT_SETS, generate_only=True),
    Option("batch_size", "sampling.batch_size", int, "prompt sets: outputs generated together in one batch per forward (those of one size and step count)", SERVER, group=PROMPT_SETS, generate_only=True),
    Option("num_outputs_per_prompt", "output.num_outputs_per_prompt", int, "outputs per prompt, with seeds seed, seed+1, ...", SERVER, group=PROMPT_SETS, generate_only=True),
    Option("resume", "output.resume", bool, "prompt sets: keep the outputs the output path's manifest records as made with this run's settings (a run with other settings is refused there); --no-resume makes every output again", SERVER, group=PROMPT_SETS, generate_only=True),
    Option("output_path", "output.path", str, "directory to save outputs in", OUTPUT),
    Option("output_file_name", "output.file_name", str, "file name of the output; unset: made from the prompt and seed", OUTPUT, generate_only=True),
    Option("output_file_path", "output.file_name", str, "the whole output path, directory and file name (its extension picks the format); sets output_path and output_file_name", OUTPUT, splits=split_output_file_path, generate_only=True),
    Option("save_output", "output.save", bool, "save the image/video to disk", OUTPUT, generate_only=True),
    Option("return_frames", "output.return_frames", bool, "return the raw frames (Python API)", OUTPUT, generate_only=True),
    Option("perf_dump_path", "output.perf_dump_path", str, "write the run's benchmark report (SGLang's JSON: each stage's milliseconds) to this file", OUTPUT, generate_only=True),
    Option("audio", "output.audio", str, "a video with sound: mux (one MP4, H.264 + AAC), wav (that MP4 and <name>.wav), none (silent MP4)", OUTPUT, choices(AudioOutput)),
    Option("output_compression", "output.compression", int, "JPEG/WebP and MP4 quality, 0-100 (100: best); unset: JPEG/WebP 75, MP4 crf 18 (PNG is lossless)", OUTPUT, generate_only=True),
    Option("x264_preset", "output.x264_preset", str, "libx264 preset of saved MP4s (speed against size); unset: medium", OUTPUT, choices(X264Preset), generate_only=True),
    Option("enable_frame_interpolation", "finishing.enable_frame_interpolation", bool, "RIFE frame interpolation after decode (videos): 2**exp x the frames and fps", OUTPUT),
    Option("frame_interpolation_exp", "finishing.frame_interpolation_exp", int, "frame interpolation: 2**exp - 1 frames between each pair (1: 2x, 2: 4x; up to 4)", OUTPUT),
    Option("frame_interpolation_scale", "finishing.frame_interpolation_scale", float, "RIFE's flow scale (0.5 for large frames)", OUTPUT),
    Option("frame_interpolation_model_path", "finishing.frame_interpolation_model_path", str, "RIFE 4.22.lite weights: a local file/folder or a Hugging Face repo id (org/name or org/name:file); unset: elfgum/RIFE-4.22.lite", OUTPUT),
    Option("enable_upscaling", "finishing.enable_upscaling", bool, "Real-ESRGAN upscaling after decode (and interpolation)", OUTPUT),
    Option("upscaling_scale", "finishing.upscaling_scale", int, "upscaling factor of width and height (1-8; the model's own, then bicubic)", OUTPUT),
    Option("upscaling_model_path", "finishing.upscaling_model_path", str, "Real-ESRGAN weights: a local file/folder or a Hugging Face repo id (org/name or org/name:file); unset: ai-forever/Real-ESRGAN (RealESRGAN_x2/_x4.pth by the scale)", OUTPUT),
    Option("host", "server.host", str, "address the HTTP server binds", HTTP),
    Option("port", "server.port", int, "port the HTTP server listens on", HTTP),
    Option("served_model_name", "server.served_model_name", str, "the model id /v1/models reports and requests may name; unset: the model path", HTTP),
    Option("access_log_exclude_prefixes", "server.access_log_exclude_prefixes", str, "request paths not written to the request log (prefixes, e.g. /health)", HTTP, many=True),
    Option("perf_log_dir", "server.perf_log_dir", str, "append each completed job's stage and step timings to DIR/performance.log (SGLang's format; also SGLANG_DIFFUSION_STAGE_LOGGING=1 with SGLANG_PERF_LOG_DIR)", HTTP),
    Option("api_key", "server.api_key", str, "require 'Authorization: Bearer KEY' (also from SGLD_API_KEY)", HTTP),
    Option("max_queue", "server.max_queue", int, "jobs waiting for the engine before new ones get 429", HTTP),
    Option("max_batch_size", "server.max_batch_size", int, "most samples queued requests share in one forward (1: no batching)", HTTP),
    Option("batch_wait_ms", "server.batch_wait_ms", int, "how long the engine waits for more requests to batch with the first", HTTP),
    Option("batch_max_pixels", "server.batch_max_pixels", int, "requests larger than this (width x height x frames) run alone", HTTP),
    Option("dp_size", "parallel.dp_size", int, "serve: engine workers on this machine, each on num_gpus / dp_size GPUs with the sequence/CFG layout given", HTTP),
    Option("job_store", "server.job_store", str, "job store URL shared by replicas (postgresql://user@host/db; also from SGLD_JOB_STORE); default SQLite in the output path", HTTP),
    Option("lease_s", "server.lease_s", float, "seconds a running job stays claimed without its server's heartbeat", HTTP),
    Option("max_attempts", "server.max_attempts", int, "runs a job gets when its server is lost before it fails", HTTP),
    Option("drain_s", "server.drain_s", float, "on SIGTERM, seconds the running job may take before it is re-queued", HTTP),
    Option("retention_s", "server.retention_s", float, "seconds completed jobs' files are kept (expires_at); unset: until deleted", HTTP),
    Option("warmup_sizes", "server.warmup_sizes", str, "sizes (WxH, or WxHxF for video) run once before the server says ready, so compiling happens at startup; unset: the model's default size when compiled", HTTP, many=True),
    Option("torch_threads", "server.torch_threads", int, "torch CPU threads per engine worker; unset: the machine's cores / (dp_size x replicas_on_host)", HTTP),
    Option("replicas_on_host", "server.replicas_on_host", int, "serve replicas sharing this machine's cores (sets the default torch_threads)", HTTP),
    Option("lora_dir", "server.lora_dir", str, "folder of LoRA adapters requests may name (relative to it)", HTTP),
    Option("max_loaded_loras", "server.max_loaded_loras", int, "LoRA adapters kept loaded; the least recently used is dropped", HTTP),
)

BY_NAME = {option.name: option for option in OPTIONS}

# Keys of the nested ``vae_config`` mapping of a --config file.
VAE_CONFIG_KEYS = {
    "load_encoder": "vae.load_encoder",
    "load_decoder": "vae.load_decoder",
    "tile_sample_min_height": "vae.tile_sample_min_height",
    "tile_sample_min_width": "vae.tile_sample_min_width",
}


def options_to_values(options: Mapping[str, Any], sections: Iterable[str] | None = None) -> dict[str, Any]:
    """Map option names to ``{config key: value}``; unknown names raise UserError naming them.

    ``model_path`` is kept out (it selects a model config, see sgld.models.registry).
    """
    allowed = set(sections) if sections is not None else None
    options = dict(options)
    # The LoRA options build one key together; where they are not allowed (per-request options) they stay
    # in ``options`` and fail below as unknown, never silently ignored.
    values: dict[str, Any] = _lora_values(options) if allowed is None or SERVER in allowed else {}
    switched_on: dict[str, str] = {}  # choice key -> the switch option that set it
    switched_off: set[str] = set()
    set_by: dict[str, str] = {}  # config key -> the option that set it
    shorthands: list[tuple[str, dict[str, Any]]] = []
    for name, value in options.items():
        if name == "vae_config":
            if not isinstance(value, Mapping):
                raise UserError("vae_config must be a mapping of " + ", ".join(VAE_CONFIG_KEYS), param="vae_config")
            for sub, sub_value in value.items():
                if sub not in VAE_CONFIG_KEYS:
                    raise UserError(
                        f"unknown key 'vae_config.{sub}' (known: {', '.join(VAE_CONFIG_KEYS)})", param=f"vae_config.{sub}"
                    )
                values[VAE_CONFIG_KEYS[sub]] = sub_value
            continue
        option = BY_NAME.get(name)
        if option is None or (allowed is not None and option.section not in allowed):
            raise UserError(f"unknown option {name!r}", param=name)
        if option.name == "model_path":
            continue
        if option.splits is not None:
            shorthands.append((name, option.splits(value)))
            continue
        if option.value is not None:
            if not value:
                switched_off.add(option.key)
                continue
            other = switched_on.get(option.key)
            if other is not None and BY_NAME[other].value != option.value:
                raise UserError(f"{other} and {name} cannot be combined: they set {option.key} to "
                                f"{BY_NAME[other].value} and {option.value} ({_SWITCH_MEANING[option.key]}); "
                                "choose one", param=name)
            switched_on[option.key] = name
            value = option.value
        if option.many and isinstance(value, str):
            value = [value]
        if option.several and isinstance(value, (list, tuple)):
            value = list(value) if len(value) != 1 else value[0]
        values[option.key] = value
        set_by[option.key] = name
    for key in switched_off - set(switched_on):
        values[key] = "none"
    for name, keyed in shorthands:
        for key, value in keyed.items():
            other = set_by.get(key)
            # The whole path names the file: it wins over a file name given beside it (as SGLang's
            # --output-file-path does); a different directory is still a contradiction.
            if other is not None and key != "output.file_name" and not _same_setting(key, values[key], value):
                raise UserError(f"{name}={options[name]!r} and {other}={options[other]!r} disagree about {key}; "
                                f"give {name} alone, or both with the same value", param=name)
            values[key] = value
    return values


def in_config_keys(message: str) -> str:
    """A message with its flag spellings as the config keys they set, for the Hydra door.

    ``--prompt`` -> ``sampling.prompt=``, ``--no-resume`` -> ``output.resume=false``; a key the message
    already gives in parentheses beside its flag is said once.
    """
    import re

    def key_of(match: "re.Match[str]") -> str:
        negated, name = bool(match.group(1)), match.group(2).replace("-", "_")
        option = BY_NAME.get(name) or next((o for o in OPTIONS if name in o.aliases), None)
        if option is None or option.splits is not None or option.key == "model.loras":
            return match.group(0)  # no single key to name (model_path is a model=... choice there)
        if option.name == "model_path":
            return "model=<conf/model name> (or model.path=)"
        if option.value is not None:  # a switch of a choice key
            return f"{option.key}={'none' if negated else option.value}"
        if option.type is bool:
            return f"{option.key}={'false' if negated else 'true'}"
        return f"{option.key}={match.group(3) or ''}"

    # A number after the flag is its value (--sp-size 1 -> parallel.sp_size=1); words are the sentence's.
    text = re.sub(r"--(no-)?([a-z][a-z0-9-]*[a-z0-9])(?![\w-])(?: (\d[\w.]*))?", key_of, message)
    return re.sub(r"(\S+) \(\1\)", r"\1", text)


LORA_OPTIONS = ("lora_path", "lora_scale", "lora_target", "lora_nickname", "lora_weight_name")


def _lora_values(options: dict[str, Any]) -> dict[str, Any]:
    """``model.loras`` from the LoRA options (taken out of ``options``): one entry per path, the others paired."""
    given = {name: options.pop(name) for name in LORA_OPTIONS if options.get(name) is not None}
    if not given:
        return {}
    lists = {name: value if isinstance(value, (list, tuple)) else [value] for name, value in given.items()}
    paths = lists.get("lora_path", [])
    if not paths:
        raise UserError(f"{', '.join(given)} given without lora_path", param=next(iter(given)))
    weight = given.get("lora_weight_name")  # SGLang's: the file inside a folder (or Hub repo) of several
    loras = [{"path": str(path) if weight is None or str(path).endswith(".safetensors") else f"{str(path).rstrip('/')}/{weight}"}
             for path in paths]
    for name, key in (("lora_scale", "scale"), ("lora_target", "target"), ("lora_nickname", "name")):
        items = lists.get(name)
        if items is None:
            continue
        if len(items) == 1 and name != "lora_nickname":
            items = items * len(paths)
        if len(items) != len(paths):
            raise UserError(f"{len(items)} {name} value(s) for {len(paths)} lora_path(s): give one per path"
                            + ("" if name == "lora_nickname" else " (or one for all)"), param=name)
        for lora, item in zip(loras, items):
            lora[key] = item
    return {"model.loras": loras}


# What the values of switch-set keys mean, for the message when two switches disagree.
_SWITCH_MEANING = {"offload.dit": "model: whole-model DiT offload; layerwise: block by block"}
