"""The state one generation carries through the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:  # for the annotations only: importing sgld.request must not import torch
    import numpy
    import torch
    from diffusers import SchedulerMixin
    from PIL.Image import Image

# (steps done, total steps) -> None; called by the denoise loop with 0 as it starts, then after every step.
StepCallback = Callable[[int, int], None]


@dataclass(kw_only=True)
class Request:
    """Inputs of one generation, then what each stage adds to it.

    The sampling inputs have no defaults here: they come from the run's config (the model's
    ``sampling_defaults`` and the request's overrides), built with ``from_sampling``.
    """

    prompt: str
    negative_prompt: str
    # None: the model decides (Qwen-Image-Edit: from the input image's aspect ratio).
    height: Optional[int]
    width: Optional[int]
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    guidance_scale_2: Optional[float]
    seed: int
    fps: int
    flow_shift: Optional[float]
    image_path: Union[str, list[str], None] = None  # one input image, or several (Qwen-Image-Edit-Plus)
    last_image_path: Optional[str] = None  # MiniMax-H3 fl2va: the last keyframe (image_path is the first)
    reference_images: Optional[list[str]] = None  # MiniMax-H3 ref2va's references
    # Models with sound (LTX-2): the audio's CFG scale (None or 0: guidance_scale, as the reference's rule), and
    # the two-stage recipe (half size, latent upsampler, distilled refine) in one request.
    audio_guidance_scale: Optional[float] = None
    two_stage: bool = False
    # Step caches per request (None: the run's default, cache.kind): Cache-DiT with its knobs over the run's
    # (SGLang's cache_dit_params), TeaCache.
    enable_cache_dit: Optional[bool] = None
    cache_dit_params: Optional[dict] = None
    enable_teacache: Optional[bool] = None
    step_callback: Optional[StepCallback] = None
    # Asked after every denoise step; True stops the generation (GenerationStopped). In a
    # parallel run rank 0's answer is broadcast, so every rank stops at the same step.
    stop_check: Optional[Callable[[], bool]] = None

    # Filled by the stages. Keyword inputs of the DiT: per branch (text conditioning) and shared.
    cond_kwargs: dict = field(default_factory=dict)
    uncond_kwargs: Optional[dict] = None
    model_kwargs: dict = field(default_factory=dict)
    timesteps: Optional[torch.Tensor] = None
    scheduler: Optional[SchedulerMixin] = None  # this request's own (its step index is per request)
    latents: Optional[torch.Tensor] = None
    # The input images (PIL), one per image: Qwen-Image-Edit's sized for its VL encoder, an image-to-video
    # model's as opened. Edit models also keep each image's pixels for the VAE ((1, 3, 1, H, W) in [-1, 1])
    # and its (height, width).
    condition_image: Optional[list[Image]] = None
    condition_pixels: Optional[list[torch.Tensor]] = None
    condition_size: Optional[list[tuple[int, int]]] = None
    # What the family's DitAdapter gives the DiT besides the noise (None: the family takes none):
    # input images' packed latent tokens, appended after the noise tokens (Qwen-Image-Edit, FLUX.2);
    # mask + condition latents concatenated to the noise on the channel axis (Wan I2V, HunyuanVideo-1.5);
    # the latent first frame that replaces the noisy one at every step (Wan2.2 TI2V).
    condition_tokens: Optional[torch.Tensor] = None
    condition_channels: Optional[torch.Tensor] = None
    first_frame_latents: Optional[torch.Tensor] = None
    # (1, tokens): 1 on the packed video tokens that stay clean (LTX-2 I2V's first frame: timestep 0, never stepped).
    clean_tokens: Optional[torch.Tensor] = None
    # Models with sound: the audio latents and their own scheduler (a scheduler's step index is its own); the
    # request's noise generator, which a second stage draws on (LTX-2 two-stage re-noises with it).
    audio_latents: Optional[torch.Tensor] = None
    audio_scheduler: Optional[SchedulerMixin] = None
    generator: Optional[torch.Generator] = None
    frames: Optional[numpy.ndarray] = None  # uint8 (frames, height, width, 3)
    # The sound of a model that makes it: float32 (channels, samples) in [-1, 1] at ``sample_rate`` Hz.
    waveform: Optional[numpy.ndarray] = None
    sample_rate: Optional[int] = None
    timings: dict = field(default_factory=dict)
    # What a step cache did (kind, forwards computed and served from the cache per branch); None: none ran.
    step_cache: Optional[dict] = None
    # Set when this request left a batch early (its step callback raised, or it was stopped); the later
    # stages skip it and the others of its batch go on.
    error: Optional[BaseException] = None

    @property
    def image_paths(self) -> list[str]:
        """The input images as a list (none, one or several)."""
        if not self.image_path:
            return []
        return [self.image_path] if isinstance(self.image_path, str) else [str(p) for p in self.image_path]

    @property
    def do_cfg(self) -> bool:
        """Classifier-free guidance runs only when it changes the result (scale > 1)."""
        return self.guidance_scale > 1.0

    @classmethod
    def from_sampling(cls, sampling: Any, **extra: Any) -> "Request":
        """Build from a SamplingConfig: sampling keys become the Request fields of the same name; ``extra`` wins.

        Run-level keys (``prompts_file``) are not part of one request and are left out.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{**{f.name: getattr(sampling, f.name) for f in fields(sampling) if f.name in names}, **extra})
