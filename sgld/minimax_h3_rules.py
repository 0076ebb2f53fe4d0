"""MiniMax-H3's request rules without torch: which workflow a request runs, its canvas, its frame count, and what
the guidance-distilled checkpoint refuses, all checked before weights load.

The arithmetic is diffusers 0.42.1's (``modular_pipelines/minimax_h3/modular_pipeline.py``: ``resolve_canvas_size``,
``align_num_frames``, the 5-15 s window at 24 fps); it is restated here because importing diffusers' module pulls
in torch, and ``tests/test_minimax_h3_rules.py`` holds both to the same answers. Errors name the nearest valid
values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from sgld.errors import UserError

FPS = 24  # fixed: the released model has no frame-rate input
MIN_SECONDS, MAX_SECONDS = 5.0, 15.0  # of the *aligned* frame count
MIN_ASPECT, MAX_ASPECT = 1 / 4, 4.0  # width / height the checkpoint was trained over
MAX_REFERENCE_IMAGES = 9  # MiniMaxH3ImageReference's limit in the reference's Ref2VASetupStep
DEFAULT_ASPECT = (16, 9)  # the canvas of a request without a keyframe
AUDIO_LATENTS_PER_SECOND = 40  # the audio VAE hops 800 samples at 32 kHz


class Workflow(StrEnum):
    """The three workflows of ``MiniMaxH3Blocks``; ``partition`` is the transformer folder each runs on."""

    t2va = "t2va"  # prompt only
    fl2va = "fl2va"  # a first and/or last keyframe
    ref2va = "ref2va"  # omni-reference images

    @property
    def partition(self) -> str:
        return "transformer_ref" if self is Workflow.ref2va else "transformer"


# The workflows an engine runs when ``model.workflows`` is left empty and its run names no reference image: both
# on ``transformer/``, so a server loads one 33 B DiT unless asked for ref2va's too.
DEFAULT_WORKFLOWS = (Workflow.t2va, Workflow.fl2va)


def engine_workflows(configured: Sequence[str], references: Sequence[str] = ()) -> tuple[Workflow, ...]:
    """The workflows an engine loads the partitions for: ``model.workflows``, else ref2va alone when the run's own
    request names reference images (a one-off ``generate``), else t2va and fl2va. A name that is not a workflow
    is a UserError."""
    names = [str(name) for name in configured]
    unknown = [name for name in names if name not in Workflow.__members__]
    if unknown:
        raise UserError(f"workflows={unknown[0]!r} is not a MiniMax-H3 workflow (t2va, fl2va, ref2va)",
                        param="workflows")
    if names:
        return tuple(dict.fromkeys(Workflow(name) for name in names))
    return (Workflow.ref2va,) if references else DEFAULT_WORKFLOWS


def partitions_of(workflows: Sequence[Workflow]) -> set[str]:
    """The transformer partitions (folder names) ``workflows`` run on."""
    return {workflow.partition for workflow in workflows}


def check_workflow_loaded(workflow: Workflow, loaded: Sequence[Workflow], param: str = "prompt") -> None:
    """A request's workflow must run on a partition the engine loaded; else a UserError naming the flag (and
    ``param``, the input that selected the workflow)."""
    if workflow.partition in partitions_of(loaded):
        return
    runs = ", ".join(w.value for w in Workflow if w.partition in partitions_of(loaded))
    both = " ".join(w.value for w in Workflow if w in loaded or w is workflow)  # as the flag takes them
    raise UserError(f"{param}: MiniMax-H3's {workflow.value} workflow runs on the folder's {workflow.partition}/ "
                    f"partition, which this engine did not load (it runs {runs}); start it with --workflows {both} "
                    "to load both partitions", param=param)


def workflow_of(image: Optional[str], last_image: Optional[str], references: Sequence[str]) -> Workflow:
    """The workflow a request's inputs select (the reference's own rule: references, else keyframes, else text)."""
    if references and (image or last_image):
        given = "image_path" if image else "last_image_path"
        raise UserError(f"{given} and reference_images select different MiniMax-H3 workflows (fl2va, ref2va); give "
                        "keyframes or references, not both", param=given)
    if references:
        return Workflow.ref2va
    return Workflow.fl2va if image or last_image else Workflow.t2va


@dataclass(frozen=True)
class Geometry:
    """A folder's canvas and frame geometry: what diffusers' pipeline reads from its config and components."""

    canvas_multiple: int  # the VAE's spatial compression x the DiT's spatial patch
    short_edge: int  # modular_model_index.json's canvas_short_edge (768 released)
    max_pixels: int  # canvas_max_pixels (768 * 1344 released)
    reference_short_edge: int  # reference_image_short_edge (2048 released)
    frames_per_chunk: int  # the video VAE's clip_length (17)
    latents_per_chunk: int  # latent frames a chunk keeps: ceil(clip_length / temporal compression) (5)

    @classmethod
    def of_folder(cls, folder: Path) -> Geometry:
        """Read from ``modular_model_index.json``, ``vae/config.json`` and either transformer partition's config."""
        index = json.loads((folder / "modular_model_index.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        dit_dir = next((folder / name for name in ("transformer", "transformer_ref") if (folder / name).is_dir()),
                       None)
        if dit_dir is None:
            raise UserError(f"MiniMax-H3 folder {folder} has neither transformer/ nor transformer_ref/",
                            param="model_path")
        return cls.of_configs(index, vae, json.loads((dit_dir / "config.json").read_text()))

    @classmethod
    def of_configs(cls, index: Mapping[str, Any], vae: Mapping[str, Any], dit: Mapping[str, Any]) -> Geometry:
        """From the pipeline's config (``modular_model_index.json``'s keys), the VAE's and the DiT's configs."""
        patch = dit.get("patch_size", [1, 2, 2])
        temporal = math.prod(vae.get("temporal_downsample_factors", (1, 2, 2, 1, 1, 1)))
        clip = vae.get("clip_length", 17)
        return cls(canvas_multiple=math.prod(vae.get("spatial_downsample_factors", (2, 2, 2, 2, 1, 1))) * patch[2],
                   short_edge=index.get("canvas_short_edge", 768), max_pixels=index.get("canvas_max_pixels", 768 * 1344),
                   reference_short_edge=index.get("reference_image_short_edge", 2048), frames_per_chunk=clip,
                   latents_per_chunk=math.ceil(clip / temporal))

    # Frames -----------------------------------------------------------------------------------------------------

    def align(self, num_frames: int) -> int:
        """``num_frames`` snapped up to the next ``17 n + 5`` the video VAE encodes (diffusers' ``align_num_frames``)."""
        return num_frames + (self.latents_per_chunk - num_frames) % self.frames_per_chunk

    def valid_frames(self) -> list[int]:
        """Every aligned frame count whose duration lies in the 5-15 s window (124 ... 345 released)."""
        first = self.align(math.ceil(MIN_SECONDS * FPS))
        return list(range(first, int(MAX_SECONDS * FPS) + 1, self.frames_per_chunk))

    def frames(self, num_frames: int) -> int:
        """The frame count the model generates for ``num_frames`` (snapped up), or a UserError naming the nearest."""
        if num_frames < 1:
            raise UserError(f"num_frames={num_frames} must be positive", param="num_frames")
        aligned, valid = self.align(num_frames), self.valid_frames()
        if aligned not in valid:
            nearest = min(valid, key=lambda f: abs(f - num_frames))
            raise UserError(f"num_frames={num_frames} snaps up to {aligned} ({aligned / FPS:.3f} s at {FPS} fps); "
                            f"MiniMax-H3 generates {MIN_SECONDS:g}-{MAX_SECONDS:g} s of {self.frames_per_chunk} n + "
                            f"{self.latents_per_chunk} frames ({valid[0]} ... {valid[-1]}); nearest valid: {nearest}",
                            param="num_frames")
        return aligned

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of an aligned count: ``5 n + 2`` (124 -> 37)."""
        return (num_frames - self.latents_per_chunk) // self.frames_per_chunk * self.latents_per_chunk + 2

    @staticmethod
    def audio_latents(num_frames: int) -> int:
        """Audio latents covering ``num_frames`` (124 -> 207), diffusers' ``audio_latent_num_frames``."""
        return int(round(num_frames / FPS * AUDIO_LATENTS_PER_SECOND))

    # Canvas -----------------------------------------------------------------------------------------------------

    def canvas_for_aspect(self, aspect_width: float, aspect_height: float, what: str = "aspect") -> tuple[int, int]:
        """(height, width) of the canvas for an aspect ratio (diffusers' ``resolve_canvas_size``), or a UserError
        when the ratio lies outside 1:4 ... 4:1. ``what`` names the input the ratio came from."""
        if aspect_width <= 0 or aspect_height <= 0:
            raise UserError(f"{what} {aspect_width:g}x{aspect_height:g} must have a positive size", param=what)
        ratio = aspect_width / aspect_height
        if not MIN_ASPECT <= ratio <= MAX_ASPECT:
            raise UserError(f"{what} is {aspect_width:g}x{aspect_height:g} (width/height {ratio:.3g}); MiniMax-H3 takes "
                            f"aspect ratios from 1:4 to 4:1: crop it, or give --height and --width", param=what)
        width, height = (self.short_edge * ratio, float(self.short_edge)) if ratio >= 1 else (
            float(self.short_edge), self.short_edge / ratio)
        area = width * height
        if area > self.max_pixels:
            scale = (self.max_pixels / area) ** 0.5
            width, height = width * scale, height * scale
        m = self.canvas_multiple
        return max(m, round(height / m) * m), max(m, round(width / m) * m)

    def canvas(self, height: Optional[int], width: Optional[int],
               keyframe_size: Optional[tuple[int, int]] = None) -> tuple[int, int]:
        """(height, width) of a request: both given, else from the first keyframe's (width, height), else 16:9."""
        if (height is None) != (width is None):
            given = "height" if height is not None else "width"
            raise UserError(f"{given} given alone: MiniMax-H3 takes height and width together, or neither (the canvas "
                            "then follows the first keyframe's aspect, else 16:9)", param=given)
        if height is None:
            if keyframe_size is not None:
                return self.canvas_for_aspect(*keyframe_size, what="image_path")
            return self.canvas_for_aspect(*DEFAULT_ASPECT)
        m = self.canvas_multiple
        for name, value in (("height", height), ("width", width)):
            if value < m or value % m:
                low = max(m, value // m * m)
                near = f"{low} or {low + m}" if value > low else str(low)
                raise UserError(f"{name}={value} must be a multiple of {m} (the video VAE's 16 x the DiT's patch 2); "
                                f"nearest valid: {near}", param=name)
        return height, width


def check_reference_count(count: int) -> None:
    """At most ``MAX_REFERENCE_IMAGES`` reference images (the reference pipeline's limit)."""
    if count > MAX_REFERENCE_IMAGES:
        raise UserError(f"reference_images: {count} given; MiniMax-H3 takes at most {MAX_REFERENCE_IMAGES} reference "
                        "images", param="reference_images")


def check_reference_size(index: int, width: int, height: int) -> None:
    """A reference image of a positive size within 1:4 ... 4:1 (the reference's setup step's rule)."""
    if width <= 0 or height <= 0 or not MIN_ASPECT <= width / height <= MAX_ASPECT:
        raise UserError(f"reference_images[{index}] is {width}x{height}; MiniMax-H3 takes reference images with aspect "
                        "ratios from 1:4 to 4:1: crop it", param="reference_images")


def reference_size(geometry: "Geometry", width: int, height: int) -> tuple[int, int]:
    """(width, height) a reference image is encoded at: its own aspect at the folder's reference short edge (2048
    released, upscaling included, no area cap), each side rounded to the canvas multiple."""
    m = geometry.canvas_multiple
    scale = geometry.reference_short_edge / min(width, height)
    return max(m, round(width * scale / m) * m), max(m, round(height * scale / m) * m)


def check_distilled(guidance_scale: Optional[float], negative_prompt: Optional[str], flow_shift: Optional[float],
                    cfg_parallel: bool = False) -> None:
    """Refuse what a guidance-distilled checkpoint with fixed schedulers has no input for (unset: None or "")."""
    why = "MiniMax-H3 is guidance-distilled (one forward per step, no guider)"
    if guidance_scale is not None:
        raise UserError(f"guidance_scale={guidance_scale:g}: {why}; leave it unset", param="guidance_scale")
    if negative_prompt:
        raise UserError(f"negative_prompt={negative_prompt!r}: {why}, so there is no negative branch; leave it unset",
                        param="negative_prompt")
    if cfg_parallel:
        raise UserError(f"cfg_parallel: {why}, so there are no branches to split; use --ulysses-degree or "
                        "--ring-degree", param="cfg_parallel")
    if flow_shift is not None:
        raise UserError(f"flow_shift={flow_shift:g}: MiniMax-H3's two schedulers have fixed shifts (video 12, audio 3) "
                        "that no input of the reference pipeline changes; leave it unset", param="flow_shift")


def check_steps(num_inference_steps: int) -> None:
    """Steps count the sigma grid's points, the terminal 0 included (the reference's meaning): N - 1 forwards."""
    if num_inference_steps < 2:
        raise UserError(f"num_inference_steps={num_inference_steps}: MiniMax-H3 counts sigma grid points including "
                        "the final 0, so at least 2 (one forward); the reference's default is 50", param="num_inference_steps")
