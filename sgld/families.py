"""Model families: one frozen spec per family, the one place that says what a family is and can do.

Every check that runs before weights load (CLI, runner, server, rank group, playground)
reads a family's spec; loaded pipelines read the same spec. A new family is one more
entry in ``FAMILIES`` plus its pipeline module. No torch here: ``--help`` and bad-input
errors stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Sequence

from sgld.cache_support import check_family
from sgld.checks import (
    ImageMode, PositionLimit, bucket_nearest, check_image_request, check_position_table, check_ulysses_heads,
    check_video_request, open_input_image,
)
from sgld.config.cache import uses_cache_dit, uses_teacache
from sgld.config.schema import MASKLESS_BACKENDS, CacheKind
from sgld.errors import UserError
from sgld.minimax_h3_rules import MAX_REFERENCE_IMAGES
from sgld.request import Request

if TYPE_CHECKING:
    from sgld.config.schema import RunConfig


class OutputKind(StrEnum):
    """What a family writes."""

    video = "video"  # mp4
    image = "image"  # png / jpeg / webp


class TaskType(StrEnum):
    """SGLang's name for what a family does, as SGLang's model registry gives it (clients read it from /v1/models;
    tests/test_sglang_suite.py holds each family to SGLang's answer)."""

    T2V = "T2V"  # text to video
    I2V = "I2V"  # image (and text) to video
    TI2V = "TI2V"  # text, optionally with a first frame, to video
    T2I = "T2I"  # text to image
    I2I = "I2I"  # an input image (and text) to image: the edit models
    TI2I = "TI2I"  # text, optionally with reference images, to image (FLUX.2)


class GuidanceKind(StrEnum):
    """How ``guidance_scale`` steers a family's DiT."""

    cfg = "cfg"  # classifier-free guidance: cond and uncond branches of the same shape (one batch of two)
    true_cfg = "true_cfg"  # CFG whose branches' prompts differ in length, rescaled to the cond norm (Qwen-Image)
    embedded = "embedded"  # guidance-distilled: the scale is a model input, one branch (FLUX, HunyuanVideo)
    # Z-Image: cond + scale * (cond - uncond), so any scale > 0 guides (0: one branch, as Turbo runs).
    cfg_extra = "cfg_extra"
    # LTX-2: CFG with a video and an audio scale, STG, modality isolation and rescale, combined in x0 space.
    audio_video = "audio_video"


@dataclass(frozen=True)
class SizeConstraints:
    """What sizes a model accepts: height/width multiples, and frames = k * temporal_factor + 1.

    ``bucket_size``: the side of the square, in pixels, whose area the model's training buckets
    share (HunyuanVideo-1.5: 640 at 480p); a size taken from an input image is the bucket nearest
    its aspect ratio. ``positions``: the largest size the DiT's rotary position table covers, where
    the DiT precomputes one (None: positions are computed for any size).
    """

    spatial_multiple: int
    temporal_factor: int = 1
    bucket_size: Optional[int] = None
    positions: Optional[PositionLimit] = None
    # A family with a two-stage recipe (LTX-2): the parts of it the folder lacks (empty: it can run it).
    two_stage_missing: tuple[str, ...] = ()
    # A family's own size rules read from its folder (MiniMax-H3: sgld.minimax_h3_rules.Geometry).
    rules: Any = None


def wan_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """Wan: VAE spatial factor x the DiT's spatial patch; the VAE's temporal factor.

    Wan's rotary table holds ``rope_max_seq_len`` positions per axis (diffusers' default 1024): at most
    that many patches per side and latent frames per patch.
    """
    patch = dit["patch_size"]
    spatial, temporal = vae["scale_factor_spatial"], vae["scale_factor_temporal"]
    table = dit.get("rope_max_seq_len", 1024)
    positions = PositionLimit(f"transformer rope_max_seq_len={table}", max_height=table * patch[1] * spatial,
                              max_width=table * patch[2] * spatial, max_frames=(table * patch[0] - 1) * temporal + 1)
    return SizeConstraints(spatial * max(patch[1], patch[2]), temporal, positions=positions)


def hunyuan_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """HunyuanVideo: VAE spatial compression x the DiT's patch; the VAE's temporal compression."""
    return SizeConstraints(vae["spatial_compression_ratio"] * dit["patch_size"], vae["temporal_compression_ratio"])


def hunyuan15_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """HunyuanVideo-1.5: as HunyuanVideo, plus the DiT's ``target_size`` (its training buckets' side)."""
    return replace(hunyuan_sizes(vae, dit), bucket_size=dit["target_size"])


def ltx2_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """LTX-2: the video VAE's compression (32x in space, 8x in time) x the DiT's patch (1); RoPE is computed
    for any size (no table)."""
    return SizeConstraints(vae["spatial_compression_ratio"] * dit.get("patch_size", 1), vae["temporal_compression_ratio"])


def flux_vae_scale(vae: Mapping[str, Any]) -> int:
    """FLUX's VAE downsampling factor: one per block after the first."""
    return 2 ** (len(vae["block_out_channels"]) - 1)


def qwen_vae_scale(vae: Mapping[str, Any]) -> int:
    """Qwen-Image's VAE downsampling factor: one per temporal-downsample entry."""
    return 2 ** len(vae["temperal_downsample"])


def flux_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """Multiples of twice the VAE factor (latents are packed 2x2); one frame."""
    return SizeConstraints(2 * flux_vae_scale(vae))


def qwen_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """As FLUX, with Qwen-Image's VAE."""
    return SizeConstraints(2 * qwen_vae_scale(vae))


def z_image_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """As FLUX; Z-Image's rotary table holds ``axes_lens`` (frame, height, width) positions of one patch each."""
    multiple = flux_vae_scale(vae) * dit.get("all_patch_size", [2])[0]
    lens = dit.get("axes_lens", [1024, 512, 512])
    positions = PositionLimit(f"transformer axes_lens={list(lens)}", max_height=lens[1] * multiple,
                              max_width=lens[2] * multiple)
    return SizeConstraints(2 * flux_vae_scale(vae), positions=positions)


def minimax_h3_sizes(vae: Mapping[str, Any], dit: Mapping[str, Any]) -> SizeConstraints:
    """MiniMax-H3: the video VAE's spatial compression x the DiT's patch; its frame counts (17 n + 5) and canvas
    are its own rules (``SizeConstraints.rules``), not a temporal factor."""
    import math

    spatial = math.prod(vae.get("spatial_downsample_factors", (2, 2, 2, 2, 1, 1)))
    return SizeConstraints(spatial * dit.get("patch_size", [1, 2, 2])[2])


@dataclass(frozen=True)
class FamilySpec:
    """Everything sgld knows about one model family, read from nowhere else."""

    name: str
    task: TaskType
    output: OutputKind
    image_mode: ImageMode
    guidance: GuidanceKind
    # Reads the size constraints from the VAE's and the DiT's configs (a folder's JSON or loaded modules' .config).
    sizes: Callable[[Mapping[str, Any], Mapping[str, Any]], SizeConstraints]
    # "module:Class" of sgld's pipeline, and the diffusers pipeline class its folders name in model_index.json.
    pipeline: str
    reference_pipeline: str
    # conf/model file whose sampling defaults suit a folder sgld ships no config for (one expert, two experts).
    default_model: str
    default_model_two_experts: Optional[str] = None
    # A model_index.json key that marks this family among folders of the same pipeline class (Wan2.2 TI2V).
    index_marker: Optional[str] = None
    sequence_parallel: bool = True
    vae_sp: bool = False
    # The DiT class whose attention takes a mask (text padding); None: mask-less attention.
    masked_attention: Optional[str] = None
    # diffusers' LoRA loader mixin whose lora_state_dict reads this family's adapters (Kohya layouts included).
    lora_loader: str = ""
    # How many input images a request may give (Qwen-Image-Edit-Plus: several, composed into one; FLUX.2:
    # reference images, which the reference pipelines do not bound: sgld takes up to 4).
    max_input_images: int = 1
    # Condition images besides the first frame (MiniMax-H3): a last keyframe, and up to this many reference images.
    takes_last_image: bool = False
    max_reference_images: int = 0
    # Video from an image: without --height/--width the output takes the image's aspect (HunyuanVideo-1.5 I2V).
    size_from_image: bool = False
    # Its DiT class loads GGUF weights (--dit-weights): diffusers has a single-file loader for it
    # (diffusers.loaders.single_file_model.SINGLE_FILE_LOADABLE_CLASSES; tests/test_gguf.py holds the two equal).
    gguf_dit: bool = True
    # Video with its sound (LTX-2): the result carries a waveform, the MP4 an AAC stream (output.audio).
    audio: bool = False
    # The two-stage recipe (LTX-2): the folder's latent upsampler subfolder and the glob of its stage-2 LoRA
    # file at the folder's root (None: the family has no such recipe).
    upsampler: Optional[str] = None
    stage_2_lora: Optional[str] = None

    @property
    def supported_task_types(self) -> tuple[TaskType, ...]:
        """The tasks a request may ask this family for (SGLang's ``supported_task_types``): its own."""
        return (self.task,)

    @property
    def needs_image(self) -> bool:
        """True for models that transform an input image (``image_path``): edit and image-to-video."""
        return self.image_mode == ImageMode.required

    @property
    def takes_image(self) -> bool:
        """True when an input image is accepted: required or optional (Wan2.2 TI2V)."""
        return self.image_mode != ImageMode.never

    def pipeline_class(self) -> type:
        """sgld's Pipeline subclass for this family (imports torch)."""
        import importlib

        module, _, name = self.pipeline.partition(":")
        return getattr(importlib.import_module(module), name)

    def constraints_in_folder(self, folder: Path) -> SizeConstraints:
        """The size constraints from a model folder's JSON configs (the first expert's DiT config)."""
        sizes = self.sizes(_read_json(folder / "vae" / "config.json"), _read_json(_dit_config_file(folder)))
        return replace(sizes, two_stage_missing=self.two_stage_missing(folder))

    def two_stage_missing(self, folder: Path) -> tuple[str, ...]:
        """What of the two-stage recipe ``folder`` lacks: its upsampler's config, one stage-2 LoRA file."""
        if self.upsampler is None:
            return ()
        missing = []
        if not (folder / self.upsampler / "config.json").is_file():
            missing.append(f"{self.upsampler}/ (the latent upsampler)")
        # A random: folder (benchmarks) holds the LoRA's "<file>.random.json" stand-in, written out on first load.
        if len(list(folder.glob(self.stage_2_lora)) or list(folder.glob(self.stage_2_lora + ".random.json"))) != 1:
            missing.append(f"one {self.stage_2_lora} file (the stage-2 distilled LoRA)")
        return tuple(missing)

    def sample_rate_in_folder(self, folder: Path) -> Optional[int]:
        """The sound's sample rate (Hz) of a family with sound: its vocoder's output rate; None for silent ones."""
        return int(_read_json(folder / "vocoder" / "config.json")["output_sampling_rate"]) if self.audio else None

    def check_output(self, output: Any) -> None:
        """Raise UserError when ``output`` (an OutputConfig) asks for sound from a family that makes none."""
        if output.audio == "wav" and not self.audio:
            raise UserError(f"audio=wav: {self.name} models make no sound; leave --audio unset", param="audio")

    def check_request(self, req: Request, constraints: SizeConstraints) -> None:
        """Raise UserError naming the field when a model of this family cannot run ``req``.

        A family that sizes its video from the input image (``size_from_image``) first sets an unset
        height and width to the bucket nearest the image's aspect ratio, so the request says what it makes.
        """
        if (req.reference_images and not self.max_reference_images) or (req.last_image_path and
                                                                          not self.takes_last_image):
            given = "reference_images" if req.reference_images else "last_image_path"
            raise UserError(f"{given}: {self.name} models take no {given.replace('_', ' ')} (MiniMax-H3 does)",
                            param=given)
        if self.size_from_image and req.height is None and req.width is None and len(req.image_paths) == 1:
            image = open_input_image(req.image_paths[0])
            req.height, req.width = bucket_nearest(image.height, image.width, constraints.bucket_size,
                                                   constraints.spatial_multiple)
        self._check_audio_and_stages(req, constraints)
        # Two stages: stage 1 runs at half the size, which must itself be a size the VAE takes.
        multiple = constraints.spatial_multiple * (2 if req.two_stage else 1)
        if self.output == OutputKind.video:
            check_video_request(req, multiple, constraints.temporal_factor, self.image_mode,
                                size_optional=self.size_from_image)
        else:
            check_image_request(req, multiple, self.image_mode, max_images=self.max_input_images)
        check_position_table(req, constraints.positions)

    def _check_audio_and_stages(self, req: Request, constraints: SizeConstraints) -> None:
        """Sound settings only where the family makes sound; two stages only where the family and folder have them."""
        if req.audio_guidance_scale is not None and not self.audio:
            raise UserError(f"audio_guidance_scale: {self.name} models make no sound; leave it unset",
                            param="audio_guidance_scale")
        if req.two_stage and self.upsampler is None:
            with_recipe = ", ".join(spec.name for spec in FAMILIES.values() if spec.upsampler) or "none"
            raise UserError(f"two_stage: {self.name} models have no two-stage recipe (a latent upsampler and a "
                            f"refine pass); families that have one: {with_recipe}", param="two_stage")
        if req.two_stage and constraints.two_stage_missing:
            raise UserError(f"two_stage: this model folder lacks {' and '.join(constraints.two_stage_missing)}, "
                            "which the two-stage recipe loads (Lightricks/LTX-2 ships both); run one-stage "
                            "(without --two-stage) or use a folder that has them", param="two_stage")
        if self.audio and req.flow_shift is not None:
            raise UserError("flow_shift: this model's shift follows the video's token count; leave it unset",
                            param="flow_shift")

    def batch_key(self, req: Request) -> tuple:
        """What requests must share to run as one batch: output size, steps, scheduler, branches.

        Prompts, seeds, guidance scales and input images differ per sample. An edit model's output
        and condition tokens follow its input image's size, so that size is part of the key; a
        TI2V model conditions with or without a first frame.
        """
        image_size = None
        if self.takes_image and req.image_path and (self.output == OutputKind.image or self.image_mode == ImageMode.optional):
            from PIL import Image

            sizes = []
            for path in req.image_paths:
                with Image.open(path) as probe:
                    sizes.append(probe.size)
            image_size = tuple(sizes) if self.output == OutputKind.image else "first_frame"
        frames = req.num_frames if self.output == OutputKind.video else 1
        key = (req.height, req.width, frames, req.num_inference_steps, req.flow_shift, self.guided(req), image_size)
        # The sound's length follows frames / fps, and the DiT's positions the fps; two stages run other steps.
        return key + (req.fps, req.two_stage) if self.audio else key

    def guided(self, req: Request) -> bool:
        """Whether ``req`` runs an unconditional branch beside the conditional one."""
        if self.guidance == GuidanceKind.embedded:  # the scale is a DiT input: one branch
            return False
        if self.audio:  # either modality's CFG runs both branches
            return req.guidance_scale > 1 or audio_scale(req) > 1
        if self.guidance == GuidanceKind.cfg_extra:
            return req.guidance_scale > 0
        return req.do_cfg

    def check_run(self, run: "RunConfig", folder: Optional[Path] = None) -> None:
        """Raise UserError before any rank starts or weights load when this family cannot run ``run``'s settings.

        ``folder``: the model folder, whose DiT configs say how many attention heads Ulysses splits.
        """
        self.check_output(run.output)
        self.check_workflows(run.model.workflows)
        sp_size = run.parallel.sp_size or 1
        if sp_size > 1 and not self.sequence_parallel:
            raise UserError(f"sp_size={sp_size}: {self.name} models have no sequence-parallel split yet; "
                            "run them with --sp-size 1 (one GPU per run)", param="sp_size")
        if folder is not None and (run.parallel.ulysses_degree or 1) > 1:
            for config in _dit_configs(folder):
                check_ulysses_heads(run.parallel.ulysses_degree, config.get("num_attention_heads") or config["n_heads"])
                if config.get("audio_num_attention_heads"):  # LTX-2's audio attention is split by heads too
                    check_ulysses_heads(run.parallel.ulysses_degree, config["audio_num_attention_heads"])
        if run.parallel.enable_cfg_parallel and self.guidance == GuidanceKind.embedded:
            # The second rank would repeat the first's forward: refused rather than a GPU silently wasted.
            instead = ("use --ulysses-degree or --ring-degree" if self.sequence_parallel
                       else "run it on one GPU (no sequence-parallel split for it yet)")
            raise UserError(f"cfg_parallel: {self.name} models are guidance-distilled (the guidance scale is a model "
                            f"input, one forward per step), so there are no branches to split; {instead}",
                            param="cfg_parallel")
        backend = run.model.attention_backend
        if backend in MASKLESS_BACKENDS and self.masked_attention:
            raise UserError(f"attention_backend='{backend}' takes no attention mask, and "
                            f"{self.masked_attention} masks its text padding; use auto, fa3, cudnn, flash or "
                            "efficient", param="attention_backend")
        if (run.model.loras or run.server.lora_dir) and not self.lora_loader:
            raise UserError(f"LoRA adapters: diffusers has no LoRA loader for {self.name} models yet, so sgld "
                            "cannot read their adapters; run without --lora-path / --lora-dir", param="lora_path")
        if run.model.dit_weights:
            self._check_dit_weights(run.model.dit_weights, folder)
        check_family(self.name, uses_cache_dit(run), uses_teacache(run), run.cache.kind == CacheKind.first_block)
        if run.vae.sp and not self.vae_sp:
            video = ", ".join(spec.name for spec in FAMILIES.values() if spec.vae_sp)
            raise UserError(f"vae_sp: splitting the VAE decode across ranks is supported for {video}, "
                            f"not {self.name}; leave vae_sp off", param="vae.sp")

    def check_workflows(self, workflows: Sequence[str]) -> None:
        """``model.workflows`` names a family's workflows; a family without any takes none."""
        if workflows:
            raise UserError(f"workflows: {self.name} models have no workflows to choose (MiniMax-H3 does); leave "
                            "--workflows unset", param="workflows")

    def unloaded_components(self, run: "RunConfig") -> frozenset[str]:
        """Components of the folder the run's engine leaves unloaded (none: every one is used)."""
        return frozenset()

    def default_canvas(self, folder: Path) -> Optional[tuple[int, int]]:
        """(height, width) a request without a size makes, where the family decides it (None: the request's own
        size, or its input image's, decides)."""
        return None

    def check_loaded(self, req: Request, run: "RunConfig") -> None:
        """Raise UserError when ``req`` needs a component that the engine of ``run`` did not load."""

    def _check_dit_weights(self, reference: str, folder: Optional[Path]) -> None:
        """A GGUF DiT (``model.dit_weights``) replaces the one DiT of a family whose DiT class loads GGUF."""
        if not self.gguf_dit:
            raise UserError(f"dit_weights: {self.name} models cannot load GGUF weights (diffusers has no single-file "
                            "loader for their DiT); run them with the model folder's own weights", param="dit_weights")
        if not reference.endswith(".gguf"):
            raise UserError(f"dit_weights={reference!r}: sgld reads replacement DiT weights from GGUF files (.gguf) "
                            "only", param="dit_weights")
        if folder is not None and len(_dit_configs(folder)) > 1:
            raise UserError("dit_weights: this model has two DiTs (transformer, transformer_2: Wan2.2 A14B's experts) "
                            "and one GGUF file replaces one; run it with the folder's own weights", param="dit_weights")


@dataclass(frozen=True)
class MiniMaxH3Spec(FamilySpec):
    """MiniMax-H3: its workflow, canvas, frame and guidance rules (``sgld/minimax_h3_rules.py``) replace the
    shared video checks; the sound's rate is its audio VAE's."""

    def constraints_in_folder(self, folder: Path) -> SizeConstraints:
        from sgld.minimax_h3_rules import Geometry

        return replace(super().constraints_in_folder(folder), rules=Geometry.of_folder(folder))

    def sample_rate_in_folder(self, folder: Path) -> Optional[int]:
        return int(_read_json(folder / "audio_vae" / "config.json").get("sampling_rate", 32000))

    def default_canvas(self, folder: Path) -> Optional[tuple[int, int]]:
        return self.constraints_in_folder(folder).rules.canvas(None, None)  # 16:9 (768x1344 released)

    def check_request(self, req: Request, constraints: SizeConstraints) -> None:
        """The workflow's inputs, guidance-distilled refusals, canvas and frames; ``num_frames`` snapped up to the
        17 n + 5 the model generates (as the reference does), so the request says what it makes."""
        from sgld.minimax_h3_rules import (
            FPS, check_distilled, check_reference_count, check_reference_size, check_steps, workflow_of,
        )

        first = req.image_paths[0] if req.image_path else None
        if req.image_path and len(req.image_paths) > 1:
            raise UserError(f"image_path: {len(req.image_paths)} images given; MiniMax-H3 takes one first keyframe "
                            "(and --last-image-path for the last)", param="image_path")
        references = list(req.reference_images or ())
        check_reference_count(len(references))
        workflow_of(first, req.last_image_path, references)  # keyframes and references together: refused
        for index, path in enumerate(references):
            check_reference_size(index, *open_input_image(path, param="reference_images").size)
        # The family's conf sets guidance_scale 1.0 (one branch): any other value asks for guidance.
        check_distilled(None if req.guidance_scale == 1.0 else req.guidance_scale, req.negative_prompt,
                        req.flow_shift)
        if req.audio_guidance_scale is not None:
            raise UserError(f"audio_guidance_scale={req.audio_guidance_scale:g}: MiniMax-H3 is guidance-distilled (one "
                            "forward per step, no guider); leave it unset", param="audio_guidance_scale")
        self._check_audio_and_stages(req, constraints)
        if req.fps != FPS:
            raise UserError(f"fps={req.fps}: MiniMax-H3 generates at {FPS} fps only; leave --fps unset", param="fps")
        check_steps(req.num_inference_steps)
        keyframe = open_input_image(first or req.last_image_path) if (first or req.last_image_path) else None
        # The canvas, so the request says what it makes (references never bind it: ref2va's is 16:9 unless given).
        req.height, req.width = constraints.rules.canvas(req.height, req.width, keyframe.size if keyframe else None)
        req.num_frames = constraints.rules.frames(req.num_frames)

    def check_workflows(self, workflows: Sequence[str]) -> None:
        from sgld.minimax_h3_rules import engine_workflows

        engine_workflows(workflows)

    @staticmethod
    def _engine_workflows(run: "RunConfig") -> tuple:
        """The workflows the engine of ``run`` loads the partitions for."""
        from sgld.minimax_h3_rules import engine_workflows

        return engine_workflows(run.model.workflows, run.sampling.reference_images or ())

    def unloaded_components(self, run: "RunConfig") -> frozenset[str]:
        """The transformer partition no workflow of the engine runs on (each is a 33 B DiT)."""
        from sgld.minimax_h3_rules import Workflow, partitions_of

        return frozenset({workflow.partition for workflow in Workflow} - partitions_of(self._engine_workflows(run)))

    def check_loaded(self, req: Request, run: "RunConfig") -> None:
        from sgld.minimax_h3_rules import check_workflow_loaded, workflow_of

        first = req.image_paths[0] if req.image_path else None
        loaded = self._engine_workflows(run)
        given = [name for name, value in (("reference_images", req.reference_images), ("image_path", first),
                                          ("last_image_path", req.last_image_path)) if value]
        check_workflow_loaded(workflow_of(first, req.last_image_path, req.reference_images or ()), loaded,
                              param=(given or ["prompt"])[0])

    def check_run(self, run: "RunConfig", folder: Optional[Path] = None) -> None:
        if run.parallel.enable_cfg_parallel:  # before the generic refusal: H3's own words
            from sgld.minimax_h3_rules import check_distilled

            check_distilled(None, None, None, cfg_parallel=True)
        super().check_run(run, folder)


def audio_scale(req: Request) -> float:
    """The audio's CFG scale: its own, or the video's when unset or 0 (the reference's ``audio or video`` rule)."""
    return req.audio_guidance_scale or req.guidance_scale


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _dit_config_file(folder: Path) -> Path:
    """The first expert's config (Wan2.2 A14B folders may hold only ``transformer_2``)."""
    for name in ("transformer", "transformer_2"):
        if (folder / name / "config.json").is_file():
            return folder / name / "config.json"
    return folder / "transformer" / "config.json"  # missing: the usual file-not-found message


def _dit_configs(folder: Path) -> list[dict]:
    """The DiT configs of a folder: one per expert present (Wan2.2 A14B has two)."""
    return [_read_json(folder / name / "config.json") for name in ("transformer", "transformer_2")
            if (folder / name / "config.json").is_file()]


_WAN = dict(output=OutputKind.video, guidance=GuidanceKind.cfg, sizes=wan_sizes, vae_sp=True,
            lora_loader="WanLoraLoaderMixin")

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("wan_t2v", task=TaskType.T2V, image_mode=ImageMode.never, pipeline="sgld.pipelines.wan:WanT2VPipeline",
               reference_pipeline="WanPipeline", default_model="wan21", default_model_two_experts="wan22", **_WAN),
    FamilySpec("wan_ti2v", task=TaskType.TI2V, image_mode=ImageMode.optional, pipeline="sgld.pipelines.wan:WanTI2VPipeline",
               reference_pipeline="WanPipeline", index_marker="expand_timesteps", default_model="wan22_ti2v", **_WAN),
    FamilySpec("wan_i2v", task=TaskType.I2V, image_mode=ImageMode.required, pipeline="sgld.pipelines.wan:WanI2VPipeline",
               reference_pipeline="WanImageToVideoPipeline", default_model="wan21_i2v",
               default_model_two_experts="wan22_i2v", **_WAN),
    FamilySpec("hunyuan", task=TaskType.T2V, output=OutputKind.video, image_mode=ImageMode.never, guidance=GuidanceKind.embedded,
               sizes=hunyuan_sizes, pipeline="sgld.pipelines.hunyuan:HunyuanT2VPipeline",
               reference_pipeline="HunyuanVideoPipeline", default_model="hunyuan", sequence_parallel=False,
               vae_sp=True, masked_attention="HunyuanVideoTransformer3DModel",
               lora_loader="HunyuanVideoLoraLoaderMixin"),
    FamilySpec("hunyuan15_t2v", task=TaskType.T2V, output=OutputKind.video, image_mode=ImageMode.never,
               guidance=GuidanceKind.cfg, sizes=hunyuan15_sizes, pipeline="sgld.pipelines.hunyuan15:Hunyuan15T2VPipeline",
               reference_pipeline="HunyuanVideo15Pipeline", default_model="hunyuan15_t2v", sequence_parallel=False,
               masked_attention="HunyuanVideo15Transformer3DModel", gguf_dit=False),
    FamilySpec("hunyuan15_i2v", task=TaskType.I2V, output=OutputKind.video, image_mode=ImageMode.required,
               guidance=GuidanceKind.cfg, sizes=hunyuan15_sizes, pipeline="sgld.pipelines.hunyuan15:Hunyuan15I2VPipeline",
               reference_pipeline="HunyuanVideo15ImageToVideoPipeline", default_model="hunyuan15_i2v",
               sequence_parallel=False, masked_attention="HunyuanVideo15Transformer3DModel", size_from_image=True, gguf_dit=False),
    FamilySpec("flux", task=TaskType.T2I, output=OutputKind.image, image_mode=ImageMode.never, guidance=GuidanceKind.embedded,
               sizes=flux_sizes, pipeline="sgld.pipelines.flux:FluxT2IPipeline", reference_pipeline="FluxPipeline",
               default_model="flux_dev", lora_loader="FluxLoraLoaderMixin"),
    FamilySpec("qwen_image", task=TaskType.T2I, output=OutputKind.image, image_mode=ImageMode.never, guidance=GuidanceKind.true_cfg,
               sizes=qwen_sizes, pipeline="sgld.pipelines.qwen_image:QwenImageT2IPipeline",
               reference_pipeline="QwenImagePipeline", default_model="qwen_image",
               lora_loader="QwenImageLoraLoaderMixin"),
    FamilySpec("qwen_image_edit_plus", task=TaskType.I2I, output=OutputKind.image, image_mode=ImageMode.required,
               guidance=GuidanceKind.true_cfg, sizes=qwen_sizes,
               pipeline="sgld.pipelines.qwen_image:QwenImageEditPlusTI2IPipeline",
               reference_pipeline="QwenImageEditPlusPipeline", default_model="qwen_image_edit_2509",
               lora_loader="QwenImageLoraLoaderMixin", max_input_images=3),
    FamilySpec("flux2_klein", task=TaskType.TI2I, output=OutputKind.image, image_mode=ImageMode.optional,
               guidance=GuidanceKind.cfg, sizes=flux_sizes, pipeline="sgld.pipelines.flux2:Flux2KleinT2IPipeline",
               reference_pipeline="Flux2KleinPipeline", default_model="flux2_klein",
               lora_loader="Flux2LoraLoaderMixin", max_input_images=4),
    FamilySpec("flux2_dev", task=TaskType.TI2I, output=OutputKind.image, image_mode=ImageMode.optional,
               guidance=GuidanceKind.embedded, sizes=flux_sizes, pipeline="sgld.pipelines.flux2:Flux2DevT2IPipeline",
               reference_pipeline="Flux2Pipeline", default_model="flux2_dev",
               lora_loader="Flux2LoraLoaderMixin", max_input_images=4),
    FamilySpec("z_image", task=TaskType.T2I, output=OutputKind.image, image_mode=ImageMode.never,
               guidance=GuidanceKind.cfg_extra, sizes=z_image_sizes, pipeline="sgld.pipelines.z_image:ZImageT2IPipeline",
               reference_pipeline="ZImagePipeline", default_model="z_image_turbo", sequence_parallel=False,
               masked_attention="ZImageTransformer2DModel", lora_loader="ZImageLoraLoaderMixin"),
    # LTX-2: text (LTX2Pipeline) or text + first frame (LTX2ImageToVideoPipeline) to video with sound. One released
    # folder serves both pipelines, so one family whose input image is optional, as Wan2.2 TI2V's.
    FamilySpec("ltx2", task=TaskType.TI2V, output=OutputKind.video, image_mode=ImageMode.optional,
               guidance=GuidanceKind.audio_video, sizes=ltx2_sizes, pipeline="sgld.pipelines.ltx2:Ltx2Pipeline",
               reference_pipeline="LTX2Pipeline", default_model="ltx2", audio=True, lora_loader="LTX2LoraLoaderMixin",
               upsampler="latent_upsampler", stage_2_lora="*distilled-lora*.safetensors"),
    # MiniMax-H3: text (t2va) or text + first and/or last keyframe (fl2va) to video with stereo sound; one packed
    # sequence, guidance-distilled (one branch). ref2va (transformer_ref/) is not run yet.
    MiniMaxH3Spec("minimax_h3", task=TaskType.TI2V, output=OutputKind.video, image_mode=ImageMode.optional,
                  guidance=GuidanceKind.embedded, sizes=minimax_h3_sizes,
                  pipeline="sgld.pipelines.minimax_h3:MiniMaxH3Pipeline", reference_pipeline="MiniMaxH3Pipeline",
                  default_model="minimax_h3", audio=True, lora_loader="MiniMaxH3LoraLoaderMixin",
                  takes_last_image=True, max_reference_images=MAX_REFERENCE_IMAGES),
    FamilySpec("qwen_image_edit", task=TaskType.I2I, output=OutputKind.image, image_mode=ImageMode.required,
               guidance=GuidanceKind.true_cfg, sizes=qwen_sizes,
               pipeline="sgld.pipelines.qwen_image:QwenImageEditTI2IPipeline",
               reference_pipeline="QwenImageEditPipeline", default_model="qwen_image_edit",
               lora_loader="QwenImageLoraLoaderMixin"),
)}


def family_of_index(index: Mapping[str, Any], where: str = "") -> FamilySpec:
    """The family of a folder's model_index.json, or a UserError naming the pipeline classes sgld runs.

    Folders of one diffusers pipeline class are told apart by a marker key (Wan2.2 TI2V-5B
    ships as a ``WanPipeline`` with ``expand_timesteps``).
    """
    cls = index.get("_class_name")
    candidates = [spec for spec in FAMILIES.values() if spec.reference_pipeline == cls]
    if not candidates:
        known = ", ".join(sorted({spec.reference_pipeline for spec in FAMILIES.values()}))
        raise UserError(f"unsupported pipeline class {cls!r}{' in ' + where if where else ''}; sgld runs: {known}",
                        param="model_path")
    marked = [spec for spec in candidates if spec.index_marker and index.get(spec.index_marker)]
    return marked[0] if marked else next(spec for spec in candidates if spec.index_marker is None)


def default_model_of_index(index: Mapping[str, Any], where: str = "") -> str:
    """The conf/model file whose sampling defaults suit a folder sgld has no config for."""
    spec = family_of_index(index, where)
    two_experts = (index.get("transformer_2") or [None])[0] is not None
    return spec.default_model_two_experts if two_experts and spec.default_model_two_experts else spec.default_model


class DescribedModel(Protocol):
    """What the server and the front doors ask of a model: a loaded Pipeline or a folder-only FolderModel."""

    @property
    def spec(self) -> FamilySpec:
        """The model's family."""

    @property
    def constraints(self) -> SizeConstraints:
        """The sizes this model accepts."""

    @property
    def sample_rate(self) -> Optional[int]:
        """The sound's sample rate (Hz) of a model with sound; None for silent models."""

    def check_request(self, req: Request) -> None:
        """Raise UserError naming the field when the model cannot run ``req``; touches no weights."""
