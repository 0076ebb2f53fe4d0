"""Structured schema of one run: every config key, its type and its default.

Hydra merges the YAML files under ``conf/`` onto these dataclasses, so a key that is not
declared here, or a value of the wrong type, fails at composition with the key's name.
Sampling defaults that depend on the model (resolution, frames, steps, guidance, fps,
negative prompt) are interpolations of ``model.sampling_defaults``: each lives once, in the model's
config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, List, Optional

from omegaconf import II, MISSING

# Choice keys are enums: OmegaConf refuses any other value at composition, naming the key and the choices.
# Member names equal their values, so YAML, Hydra overrides and CLI flags all spell them the same way.


class Precision(StrEnum):
    """Weights' and activations' floating-point type."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class AttentionBackend(StrEnum):
    """The DiT's attention kernel (auto: FlashAttention-3 where installed on Hopper, else SDPA's pick)."""

    auto = "auto"
    sdpa = "sdpa"
    cudnn = "cudnn"
    flash = "flash"
    efficient = "efficient"
    math = "math"
    sage = "sage"
    fa3 = "fa3"
    fa3_fp8 = "fa3_fp8"


# Attention backends that take no attention mask (diffusers raises on one). sgld's fa3 and fa3_fp8 hand a
# masked call to SDPA (sgld.levers.fa3_attention), so they run every model.
MASKLESS_BACKENDS = (AttentionBackend.sage,)
# Optional kernels not verified under sequence parallelism (its ring/Ulysses paths keep their own kernels).
UNVERIFIED_SP_BACKENDS = (AttentionBackend.sage, AttentionBackend.fa3, AttentionBackend.fa3_fp8)


class CacheKind(StrEnum):
    """Step caches (lossy, opt-in): reuse transformer work between steps.

    first_block: diffusers' FirstBlockCache hooks; cache_dit: the cache-dit package (DBCache, TaylorSeer, step
    masks); teacache: whole forwards skipped while the rescaled change of the modulated input stays small.
    """

    none = "none"
    first_block = "first_block"
    cache_dit = "cache_dit"
    teacache = "teacache"


class Quantization(StrEnum):
    """DiT weight/activation quantization (lossy, opt-in): fp8 = e4m3 linear layers in the repeated blocks."""

    none = "none"
    fp8 = "fp8"


class LoraMergeMode(StrEnum):
    """How LoRA adapters run: auto (merge a fixed set; dynamic when requests may choose), merge, dynamic."""

    auto = "auto"
    merge = "merge"
    dynamic = "dynamic"


class LoraTarget(StrEnum):
    """Which DiT an adapter goes into (Wan2.2 A14B has two experts; MiniMax-H3 two partitions, ref2va's
    transformer_ref); all: every DiT the model has."""

    transformer = "transformer"
    transformer_2 = "transformer_2"
    transformer_ref = "transformer_ref"
    all = "all"


class LogLevel(StrEnum):
    """How much sgld logs (SGLang's --log-level names)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class X264Preset(StrEnum):
    """libx264's speed/size trade-off for saved MP4s, fastest first."""

    ultrafast = "ultrafast"
    superfast = "superfast"
    veryfast = "veryfast"
    faster = "faster"
    fast = "fast"
    medium = "medium"
    slow = "slow"
    slower = "slower"
    veryslow = "veryslow"
    placebo = "placebo"


class DitOffload(StrEnum):
    """Where the DiT waits between uses: resident, on the CPU as a whole, or on the CPU block by block."""

    none = "none"
    model = "model"
    layerwise = "layerwise"


class AudioOutput(StrEnum):
    """What a video with sound is saved as: one MP4 with H.264 + AAC, that MP4 and a WAV beside it, or silent."""

    mux = "mux"
    wav = "wav"
    none = "none"


def choices(enum: type[StrEnum]) -> tuple[str, ...]:
    """The values of a choice key, in declaration order (for help texts and messages)."""
    return tuple(member.value for member in enum)


@dataclass
class AudioVideoGuidance:
    """LTX-2's guidance terms beside CFG, in x0 space, per modality (the defaults switch them off).

    STG moves away from a forward whose self-attention is skipped at ``stg_blocks`` (``stg_scale`` > 0);
    modality isolation from a forward without the audio<->video cross-attention (``modality_scale`` > 1);
    the rescale blends the guided prediction back toward the conditional one's spread (``guidance_rescale`` > 0).
    An audio value of 0 means the video's, as in the reference pipeline (its ``audio_x = audio_x or x``).
    """

    stg_scale: float = 0.0
    audio_stg_scale: float = 0.0
    stg_blocks: List[int] = field(default_factory=list)
    modality_scale: float = 1.0
    audio_modality_scale: float = 1.0
    guidance_rescale: float = 0.0
    audio_guidance_rescale: float = 0.0


@dataclass
class ModelDefaults:
    """Sampling defaults of one model (what its authors recommend)."""

    # null: the model decides (edit models: from the input image's aspect ratio).
    height: Optional[int] = 480
    width: Optional[int] = 832
    num_frames: int = 81
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    # Wan2.2 two-expert models: guidance for the low-noise expert (None: same as guidance_scale).
    guidance_scale_2: Optional[float] = None
    fps: int = 16
    negative_prompt: str = ""
    # None keeps the scheduler config shipped with the weights.
    flow_shift: Optional[float] = None
    # Models with sound (LTX-2): CFG scale of the audio (None: the model makes no sound).
    audio_guidance_scale: Optional[float] = None
    # LTX-2's guidance terms beside CFG, for every request of the model (their reference's defaults in its conf file).
    av_guidance: AudioVideoGuidance = field(default_factory=AudioVideoGuidance)


@dataclass
class LoraConfig:
    """One LoRA adapter applied to every request (unless a server request names its own)."""

    # A .safetensors file, or a folder holding one (diffusers/PEFT or Kohya layout).
    path: str = MISSING
    scale: float = 1.0
    target: LoraTarget = LoraTarget.transformer
    # The adapter's nickname; None: "default" for the first such adapter (SGLang's), the file's stem for later ones.
    name: Optional[str] = None


@dataclass
class ModelConfig:
    """Which weights to load and how to run them."""

    name: str = MISSING
    # A built-in name (tiny-wan-t2v), a local diffusers folder, or a Hugging Face repo id.
    path: str = MISSING
    # A repo id missing from the Hugging Face cache is downloaded (only what sgld loads); false: the cache only.
    download: bool = True
    precision: Precision = Precision.bf16
    # One entry per text encoder, in model_index.json order; empty: same as `precision`.
    text_encoder_precisions: List[Precision] = field(default_factory=list)
    # Image-to-video models' CLIP vision encoder (Wan2.1 I2V); the reference runs it in fp32.
    image_encoder_precision: Precision = Precision.fp32
    attention_backend: AttentionBackend = AttentionBackend.auto
    # torch.compile the repeated DiT blocks. None (auto): on when serving on a CUDA GPU where nothing
    # conflicts (the server warms each size up before it is ready: server.warmup_sizes), off for
    # one-off generate runs (a 7-18 s compile costs more than it saves in one run; docs/performance.md).
    enable_torch_compile: Optional[bool] = None
    # Replay the whole DiT forward as a CUDA graph per input shape (sgld/levers/cuda_graph.py): lossless,
    # saves the host time between kernels (a small gain over compile + FA3 on an H200: docs/performance.md). CUDA only.
    cuda_graphs: bool = False
    # Lossy speed-up, off by default: fp8 runs the blocks' linear layers in float8 e4m3 (row-wise weight
    # scales, per-token activation scales) on FP8 tensor cores (compute capability 8.9+).
    quantization: Quantization = Quantization.none
    # Sliding-tile attention mask strategy (FastVideo's JSON: "step_layer_head" -> window in tiles), HunyuanVideo
    # only; None: dense attention.
    mask_strategy_file_path: Optional[str] = None
    # A GGUF file (local, or org/repo/file.gguf on the Hugging Face Hub) whose weights replace the DiT's: a
    # quantized checkpoint (Q8_0, Q4_K...) loaded by diffusers with its linear layers left quantized
    # (sgld/models/gguf.py). None: the model folder's own weights.
    dit_weights: Optional[str] = None
    # LoRA adapters loaded with the model (--lora-path, --lora-scale, --lora-target, --lora-nickname).
    loras: List[LoraConfig] = field(default_factory=list)
    lora_merge_mode: LoraMergeMode = LoraMergeMode.auto
    # MiniMax-H3: the workflows the engine runs (t2va, fl2va on transformer/; ref2va on transformer_ref/, a
    # second 33 B DiT), which decide the partitions loaded. Empty: ref2va alone when the run's own request names
    # reference images, else t2va and fl2va (sgld/minimax_h3_rules.py: engine_workflows).
    workflows: List[str] = field(default_factory=list)
    sampling_defaults: ModelDefaults = field(default_factory=ModelDefaults)


@dataclass
class ParallelConfig:
    """How many processes and how the work is split between them.

    Unset degrees (None) are derived from the others before validation, as SGLang does:
    sp_size = ulysses_degree x ring_degree, or num_gpus / cfg when only num_gpus is given.
    """

    num_gpus: int = 1
    tp_size: int = 1
    sp_size: Optional[int] = None
    ulysses_degree: Optional[int] = None
    ring_degree: Optional[int] = None
    enable_cfg_parallel: bool = False
    # Seconds a rank waits in a collective before the whole group gives up (a dead or stuck rank).
    timeout_s: int = 600
    # serve: engine workers, each on num_gpus / dp_size GPUs with the layout above (one job each at a time).
    dp_size: int = 1
    # The first GPU this run's ranks use (a data-parallel worker's share starts here; set per worker by serve).
    first_gpu: int = 0


@dataclass
class OffloadConfig:
    """Which components wait on the CPU while they are not running, and the GPU memory the plan fits them in.

    Unset (None) offload keys are decided at load by the memory plan (sgld/models/memory_plan.py) on a GPU
    (off on a CPU); a value given stays.
    """

    text_encoder: Optional[bool] = None
    # model: the whole DiT waits on the CPU and moves in for the denoise loop. layerwise: its blocks wait on
    # the CPU (pinned) and each is copied in just before it runs, the next one prefetched on a side stream.
    dit: Optional[DitOffload] = None
    vae: Optional[bool] = None
    pin_cpu_memory: bool = False
    # GiB of GPU memory the memory plan fits the run into. None: the card's free memory at load.
    max_gpu_memory: Optional[float] = None


@dataclass
class SamplingConfig:
    """One generation request."""

    prompt: Optional[str] = None
    negative_prompt: str = II("model.sampling_defaults.negative_prompt")
    num_inference_steps: int = II("model.sampling_defaults.num_inference_steps")
    guidance_scale: float = II("model.sampling_defaults.guidance_scale")
    guidance_scale_2: Optional[float] = II("model.sampling_defaults.guidance_scale_2")
    seed: int = 1024
    height: Optional[int] = II("model.sampling_defaults.height")
    width: Optional[int] = II("model.sampling_defaults.width")
    num_frames: int = II("model.sampling_defaults.num_frames")
    fps: int = II("model.sampling_defaults.fps")
    flow_shift: Optional[float] = II("model.sampling_defaults.flow_shift")
    # One input image path, or a list of them (Qwen-Image-Edit-Plus takes several).
    image_path: Any = None
    # MiniMax-H3 fl2va: the last keyframe (image_path is the first).
    last_image_path: Optional[str] = None
    # MiniMax-H3 ref2va: reference images (refused until ref2va runs).
    reference_images: Optional[list] = None
    # Models with sound: the audio's CFG scale (unset or 0: guidance_scale, as the reference does).
    audio_guidance_scale: Optional[float] = II("model.sampling_defaults.audio_guidance_scale")
    # LTX-2: stage 1 at half size, the latent upsampler, a short refine with the distilled LoRA (one request).
    two_stage: bool = False
    # A prompt set (text: one prompt per line; JSONL: per-line prompt and sampling overrides).
    prompts_file: Optional[str] = None
    # Prompt sets: outputs generated together as one batch per forward (those of one size and step count).
    batch_size: int = 1
    # Step caches per request (None: the run's cache.kind): Cache-DiT, with SGLang's knobs over the run's settings
    # (cache_dit_params: Fn_compute_blocks, residual_diff_threshold, scm_preset, ...), and TeaCache.
    enable_cache_dit: Optional[bool] = None
    cache_dit_params: Any = None  # a mapping (Any: OmegaConf cannot set a mapping into an unset Dict node)
    enable_teacache: Optional[bool] = None


@dataclass
class CacheConfig:
    """The DiT's step cache (lossy, opt-in): the kind requests run with by default, and each kind's settings."""

    # None: cache_dit when cache_dit_config is given or SGLANG_CACHE_DIT_ENABLED is true (SGLang's switch), else
    # none. cache_dit and teacache are per request too (sampling.enable_cache_dit / enable_teacache); first_block
    # is the model's for every request. (diffusers' TaylorSeer hooks with their defaults left the tiny Wan output
    # unchanged over 20 steps, i.e. did nothing here, so they are not offered; cache-dit's TaylorSeer is.)
    kind: Optional[CacheKind] = None
    # first_block: the other blocks are skipped while the first block's output changes less than this (relative).
    first_block_threshold: float = 0.05
    # cache_dit: a YAML/JSON file in cache-dit's format (its flat options or a cache_config section); None: SGLang's
    # settings from the SGLANG_CACHE_DIT_* variables (F1B0, 4 warm-up steps, threshold 0.24, 3 cached in a row).
    cache_dit_config: Optional[str] = None
    # teacache: a forward is skipped while the accumulated rescaled relative L1 change stays below this; None: the
    # model's published default (sgld.levers.teacache).
    teacache_thresh: Optional[float] = None


@dataclass
class FinishingConfig:
    """Post-processing of the decoded frames, per request: frame interpolation (videos), then upscaling."""

    # RIFE: 2**exp - 1 frames between each pair ((N - 1) * 2**exp + 1 frames) at 2**exp x the fps.
    enable_frame_interpolation: bool = False
    frame_interpolation_exp: int = 1
    # RIFE's flow scale (0.5 for large frames: its coarsest level then sees them at half size).
    frame_interpolation_scale: float = 1.0
    # A local file/folder or a Hugging Face repo id (org/name, or org/name:file); None: elfgum/RIFE-4.22.lite.
    frame_interpolation_model_path: Optional[str] = None
    # Real-ESRGAN: width and height x upscaling_scale (the model's own factor, then bicubic where they differ).
    enable_upscaling: bool = False
    upscaling_scale: int = 4
    # As above; None: ai-forever/Real-ESRGAN's RealESRGAN_x2.pth or _x4.pth (by the scale; x4 for other scales).
    upscaling_model_path: Optional[str] = None


@dataclass
class VaeConfig:
    """VAE precision, tiling and which halves to load."""

    precision: Precision = Precision.fp32
    # None: the memory plan decides (tiled where an untiled decode would not fit).
    tiling: Optional[bool] = None
    tile_sample_min_height: Optional[int] = None
    tile_sample_min_width: Optional[int] = None
    load_encoder: bool = True
    load_decoder: bool = True
    # Split VAE decode tiles across ranks (parallel runs).
    sp: bool = False


@dataclass
class OutputConfig:
    """Where and whether results are written."""

    path: str = "outputs"
    file_name: Optional[str] = None
    save: bool = True
    return_frames: bool = False
    # Prompt sets: skip items the output directory's manifest already records as done.
    resume: bool = True
    # Outputs per prompt (seeds seed, seed+1, ...); more than 1 runs as a prompt set.
    num_outputs_per_prompt: int = 1
    # generate: write SGLang's benchmark report of the run (JSON: stage timings) here; None: none.
    perf_dump_path: Optional[str] = None
    # JPEG/WebP and MP4 quality, 0-100 (SGLang's output_compression; 100: best). None: Pillow's 75 for
    # JPEG/WebP, crf 18 for video. PNG is lossless whatever it says.
    compression: Optional[int] = None
    # libx264's preset for MP4s; None: its default, medium.
    x264_preset: Optional[X264Preset] = None
    # A video with sound (LTX-2): mux (one MP4, H.264 + AAC), wav (that MP4 and <name>.wav), none (a silent MP4).
    audio: AudioOutput = AudioOutput.mux


@dataclass
class ServerConfig:
    """The HTTP server (``sgl-diffusion serve``, ``python -m server``) and its input limits."""

    host: str = "127.0.0.1"
    port: int = 30000  # SGLang's
    # The model id /v1/models reports and requests may name (SGLang's --served-model-name); None: the model path.
    served_model_name: Optional[str] = None
    # Request-log lines whose path starts with one of these are not written (health probes, say).
    access_log_exclude_prefixes: Optional[list[str]] = None
    # The per-request performance log (SGLang's performance.log: stage and step timings of each completed job) is
    # written here. None: off, unless SGLANG_DIFFUSION_STAGE_LOGGING=1 (SGLang's switch; then $SGLANG_PERF_LOG_DIR).
    perf_log_dir: Optional[str] = None
    # Clients must send "Authorization: Bearer KEY" when set; SGLD_API_KEY sets it too.
    api_key: Optional[str] = II("oc.env:SGLD_API_KEY,null")
    # Jobs waiting for the engine before new ones get 429.
    max_queue: int = 16
    threads: int = 8
    max_body_mb: int = 20
    max_prompt_chars: int = 10000
    max_frames: int = 241
    max_steps: int = 200
    max_pixels: int = 4096 * 4096
    max_video_seconds: float = 60.0
    max_images: int = 4
    # How long a synchronous image request waits for its job.
    image_timeout_s: float = 600.0
    # Poll interval the OpenAI SDK is told to use (openai-poll-after-ms).
    poll_after_ms: int = 250
    # LoRA adapters requests may name (relative to this folder); None: requests take no adapters.
    lora_dir: Optional[str] = None
    # Input images named by URL (requests, --image-path) may come from private, loopback and link-local
    # addresses; off, only public addresses are fetched (sgld.url_inputs). SGLD_ALLOW_PRIVATE_URLS=1 sets it.
    allow_private_urls: bool = II("oc.env:SGLD_ALLOW_PRIVATE_URLS,false")
    # Adapters kept loaded at once; the least recently used is dropped beyond it.
    max_loaded_loras: int = 8
    # Dynamic batching: queued requests that can share a forward (same model, size, steps, scheduler,
    # adapters) run as one batch of at most max_batch_size samples; the worker waits up to
    # batch_wait_ms for more once it has one. Samples over batch_max_pixels (width x height x frames)
    # run alone: at that size one sample already fills the GPU. Chosen from the H200 measurements in
    # docs/performance.md: FLUX 512² gains 1.40x at 4 per batch and 2% more at 8 (for twice the wait);
    # 768² gains 4%, 1024² and Wan 480p nothing; a lone request pays 2% for the wait.
    max_batch_size: int = 4
    batch_wait_ms: int = 10
    batch_max_pixels: int = 512 * 1024
    # The job store: None is SQLite in the output directory (one server process); a postgresql:// URL
    # is a store replicas share (SGLD_JOB_STORE sets it too, keeping the password off command lines).
    job_store: Optional[str] = II("oc.env:SGLD_JOB_STORE,null")
    # A running job's lease: renewed by its server's heartbeat; when it lapses, another replica re-queues it.
    lease_s: float = 60.0
    # Runs a job gets when its server is lost; after that it fails with worker_lost.
    max_attempts: int = 2
    # On SIGTERM: how long the running job may take to finish before it goes back to the queue.
    drain_s: float = 60.0
    # How long completed jobs' files are kept (their expires_at); None keeps them until deleted.
    retention_s: Optional[float] = None
    # Images when retention_s is unset: an image request answers with its data or a URL to fetch it now,
    # so its files are not kept for good.
    image_retention_s: float = 3600.0
    # Sizes ("WxH", or "WxHxF" for video) each engine runs once, 2 steps, before /health says ok, so compiling
    # happens at startup, not in a user's request. None: the model's default size when the DiT is compiled.
    warmup_sizes: Optional[list[str]] = None
    # torch's intra-op threads per engine worker. None: the machine's cores divided by the engine workers on it
    # (parallel.dp_size x replicas_on_host): replicas that each took every core slowed each other down.
    torch_threads: Optional[int] = None
    # How many serve replicas share this machine's cores (they cannot see each other; say so here).
    replicas_on_host: int = 1


@dataclass
class RunConfig:
    """The whole composed configuration of one run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    finishing: FinishingConfig = field(default_factory=FinishingConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    # "auto": cuda when available, else cpu.
    device: str = "auto"
    # sgld's log level (debug, info, warning, error, critical); other libraries' loggers stay at warning or above.
    log_level: LogLevel = LogLevel.info


def register_schema() -> None:
    """Register the schema in Hydra's ConfigStore as ``run_config_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_config_schema", node=RunConfig)
