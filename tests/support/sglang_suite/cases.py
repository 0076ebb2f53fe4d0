"""Which of SGLang's server cases run against sgld, and how each is made to fit a 2-core CPU machine.

SGLang's ``gpu_cases.py`` names released models, 1024-pixel sizes, Hub LoRA adapters and input images on the
internet. ``small_case`` swaps in, without touching SGLang's assertions: sgld's tiny model of the same family
(``TINY``), small sizes (``SIZES``), tiny LoRA adapters made for the tiny model (``LORAS``), the suite's local
input URLs, and no perf-baseline check (H100 numbers); ``dataclasses.replace`` re-runs the case's own
``__post_init__``, so what it adds (the ``quality`` pin, ``--warmup-sampling-params``) is kept.

``EXPECTED_FAILURES`` is the one list of what does not pass yet, and why (with ``ALL_SERVER_CASES_AWAIT``, the
piece every server case still waits for); strict, so a case that starts passing fails until its line is removed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# SGLang's model -> the sgld tiny model of the same family (and task).
TINY = {
    "black-forest-labs/FLUX.1-dev": "tiny-flux",
    "black-forest-labs/FLUX.2-dev": "tiny-flux2",
    "black-forest-labs/FLUX.2-klein-4B": "tiny-flux2-klein",
    "black-forest-labs/FLUX.2-klein-base-4B": "tiny-flux2-klein",
    "Tongyi-MAI/Z-Image-Turbo": "tiny-z-image",
    "Qwen/Qwen-Image": "tiny-qwen-image",
    "Qwen/Qwen-Image-Edit": "tiny-qwen-image-edit",
    "Qwen/Qwen-Image-Edit-2509": "tiny-qwen-image-edit-plus",
    "Qwen/Qwen-Image-Edit-2511": "tiny-qwen-image-edit-plus",
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "tiny-wan-t2v",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "tiny-wan-t2v",
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": "tiny-wan22-t2v",
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": "tiny-wan22-ti2v",
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": "tiny-wan21-i2v",
    "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": "tiny-wan21-i2v",
    "Wan-AI/Wan2.2-I2V-A14B-Diffusers": "tiny-wan22-i2v",
    "FastVideo/FastHunyuan-diffusers": "tiny-hunyuan",
    "hunyuanvideo-community/HunyuanVideo": "tiny-hunyuan",
    "MiniMaxAI/MiniMax-H3": "tiny-minimax-h3",
}

# The registry answers a tiny name as the SGLang model it first stands for (its task type, its modality).
ALIASES = {tiny: sglang for sglang, tiny in reversed(list(TINY.items()))}

# SGLang's sizes -> small ones of the same shape class (square stays square, wide stays wide); "" (the model's
# default) is kept: the case tests that too.
SIZES = {
    "1024x1024": "64x64", "768x768": "64x64", "512x512": "64x64",
    "1280x720": "112x64", "1360x768": "112x64", "640x384": "96x64",
    "832x480": "96x64", "480x272": "96x64", "1344x768": "112x64",
}


@dataclass(frozen=True)
class LoraPlan:
    """A tiny adapter standing for a Hub one: made on ``model``'s DiT, saved as ``file`` in its own folder."""

    model: str
    seed: int
    # Large enough that turning the adapter off moves the frames by SGLang's lora-effect bound (mean |diff| >= 12).
    b_scale: float = 8.0
    file: str = "pytorch_lora_weights.safetensors"
    decoy: bool = False  # a second .safetensors file beside it, so --lora-weight-name has to pick


LORAS = {
    "reverentelusarca/elusarca-anime-style-lora-z-image-turbo": LoraPlan("tiny-z-image", 1),
    "tarn59/pixel_art_style_lora_z_image_turbo": LoraPlan("tiny-z-image", 2),
    "Cseti/Wan-LoRA-Arcane-Jinx-v1": LoraPlan("tiny-wan-t2v", 3),
    "Cseti/wan2.2-14B-Arcane_Jinx-lora-v1": LoraPlan("tiny-wan22-t2v", 4,
                                                     file="985347-wan22_14B-low-Nfj1nx-e65.safetensors", decoy=True),
    "starsfriday/Wan2.1-Divine-Power-LoRA": LoraPlan("tiny-wan21-i2v", 5),
}

# What the "Done when" names: CI runs these (SGLD_SGLANG_CASES=all runs every mapped case).
CORE = {
    # text to image
    "flux_image_t2i", "flux_2_klein_image_t2i", "qwen_image_t2i", "zimage_image_t2i",
    # edits
    "qwen_image_edit_ti2i", "qwen_image_edit_2509_ti2i", "flux_2_ti2i",
    # video
    "wan2_1_t2v_1.3b", "wan2_2_ti2v_5b",
    # per-request speed and finishing options: TeaCache (one rank, and with Ulysses on two), RIFE x2 with Real-ESRGAN x4
    "wan2_1_t2v_1.3b_teacache_enabled", "wan2_2_t2v_a14b_teacache_2gpu", "wan2_1_t2v_1.3b_frame_interp_2x_upscaling_4x",
    # LoRA
    "zimage_image_t2i_multi_lora", "wan2_1_t2v_1_3b_lora_1gpu", "wan2_1_t2v_1_3b_dynamic_lora_default_quality_1gpu",
    "wan2_2_t2v_a14b_lora_2gpu", "wan2_1_i2v_14b_lora_2gpu",
    # two-rank layouts, one of each kind: Ulysses, ring, CFG parallel, Z-Image on two ranks (data parallel), FLUX.2
    # with --tp-size 2; the LoRA cases above add I2V with Ulysses and dynamic LoRA on two ranks
    "wan2_2_t2v_a14b_2gpu", "qwen_image_t2i_2_gpus", "wan2_1_t2v_1.3b_cfg_parallel", "zimage_image_t2i_2_gpus",
    "flux_2_image_t2i_2_gpus",
}

# Cases of a mapped model that cannot run here at all: they need the real checkpoint's weights.
OUT = {
    "flux1_modelopt_fp8_t2i": "a ModelOpt FP8 transformer checkpoint (real weights)",
    "qwen_image_modelopt_fp8_t2i": "a ModelOpt FP8 transformer checkpoint (real weights)",
    "qwen_image_edit_modelopt_fp8_ti2i": "a ModelOpt FP8 transformer checkpoint (real weights)",
    "hunyuanvideo_modelopt_fp8_t2v": "a ModelOpt FP8 transformer checkpoint (real weights)",
    "flux2_modelopt_fp8_tp2_t2i": "a ModelOpt FP8 transformer checkpoint (real weights)",
}

BACKEND = "sgld does not support --backend diffusers (it runs its own pipelines)"
COMPONENTS = "sgld does not support per-component weights (--transformer-path / --vae-path)"
MODEL_VARIANT = "sgld does not support --model-variant (MiniMax-H3's fl2va / ref2va checkpoints) or --revision"

# THE list of what does not pass yet: test id (a case id, or "CLIClass::test_name") -> why. Features sgld lacks stay
# until the feature exists; the rest name the piece of work that makes them pass. Remove a line as it lands.
EXPECTED_FAILURES: dict[str, str] = {
    "qwen_image_t2i_cache_dit_scm_config_diffusers_1gpu": BACKEND,
    "minimax_h3_t2va_2gpu_h100": MODEL_VARIANT,
    "minimax_h3_ref2va_video_audio_2gpu_h100": MODEL_VARIANT,
    "zimage_image_t2i_fp8": COMPONENTS,
    "flux_2_t2i_customized_vae_path": COMPONENTS,
    # SGLang's CLIBase.test_single_gpu, inherited by its I2I test, gives the edit model neither --prompt nor an image
    "TestSGLangI2ICLI::test_single_gpu": "no --prompt and no --image-path for an edit model: sgld refuses a generation "
                                         "without a prompt (exit 2); SGLang's I2I models require an input image too",
}

# A reason every server case not listed above would fail for (a piece of work they all wait on); None: none
# does, so each such case must pass.
ALL_SERVER_CASES_AWAIT: str | None = None


def expected_failure(test_id: str, server_case: bool = False) -> str | None:
    """Why ``test_id`` is expected to fail, or None when it must pass."""
    reason = EXPECTED_FAILURES.get(test_id)
    if reason is None and server_case:
        reason = ALL_SERVER_CASES_AWAIT
    return reason


def small_size(size: str) -> str:
    """The small stand-in for one of SGLang's sizes ("" stays the model's default)."""
    if not size:
        return size
    if size not in SIZES:
        raise KeyError(f"no small size for SGLang's {size!r}: add it to SIZES")
    return SIZES[size]


def small_sampling(params: Any, local_url: Callable[[str], str]) -> Any:
    """SGLang's sampling params at a small size, with local input URLs."""
    if params is None:
        return None
    image = params.image_path
    if isinstance(image, (list, tuple)):
        image = [local_url(str(item)) for item in image]
    elif image is not None:
        image = local_url(str(image))
    return dataclasses.replace(params, output_size=small_size(params.output_size), image_path=image)


def lora_file(repo_id: str | None, folder: Path) -> str | None:
    """Where the tiny adapter standing for ``repo_id`` is made (its folder when --lora-weight-name picks)."""
    if repo_id is None:
        return None
    plan = LORAS[repo_id]
    base = folder / repo_id.replace("/", "--")
    return str(base if plan.decoy else base / plan.file)


def small_case(case: Any, local_url: Callable[[str], str], lora_folder: Path) -> Any:
    """``case`` on sgld's tiny model of its family, at small sizes, with local inputs and adapters."""
    args = case.server_args
    server_args = dataclasses.replace(
        args, model_path=TINY[args.model_path], lora_path=lora_file(args.lora_path, lora_folder),
        second_lora_path=lora_file(args.second_lora_path, lora_folder),
        dynamic_lora_path=lora_file(args.dynamic_lora_path, lora_folder))
    return dataclasses.replace(
        case, server_args=server_args, sampling_params=small_sampling(case.sampling_params, local_url),
        lead_sampling_params=small_sampling(case.lead_sampling_params, local_url),
        # SGLang's per-stage and VRAM baselines are H100 numbers; the request's record, e2e and load checks stay.
        run_perf_check=False)


def adapters_of(case: Any) -> list[str]:
    """The Hub adapters a (SGLang, unsubstituted) case names."""
    args = case.server_args
    return [path for path in (args.lora_path, args.second_lora_path, args.dynamic_lora_path) if path]


def make_adapter(repo_id: str, folder: Path) -> Path:
    """Make (once) the tiny adapter standing for ``repo_id`` under ``folder``; the path the case passes."""
    from sgld.model_builders.tiny import materialize_tiny
    from tests.support.lora import make_lora

    plan = LORAS[repo_id]
    path = Path(lora_file(repo_id, folder))
    target = path / plan.file if plan.decoy else path
    if not target.exists():
        model = materialize_tiny(plan.model)
        made = make_lora(model, target.parent / ".build", seed=plan.seed, b_scale=plan.b_scale)
        made.rename(target)
        (target.parent / ".build").rmdir()
        if plan.decoy:  # another adapter in the same folder: only --lora-weight-name says which one to load
            decoy = make_lora(model, target.parent / ".decoy", seed=plan.seed + 100, b_scale=plan.b_scale)
            decoy.rename(target.parent / "decoy-adapter.safetensors")
            (target.parent / ".decoy").rmdir()
    return path
