"""The request fields each endpoint takes: sgld's own, and every one of OpenAI's and SGLang's schemas.

A field sgld acts on is read by the endpoint's parser. The others are sorted here: accepted without
effect (named back in the ``x-sgld-ignored-fields`` response header), refused because sgld lacks the
feature they switch on (a 400 that says so; their "off" value is accepted), or refused because they
name a path on the server. A name in none of the schemas stays a 400 naming it: SGLang accepts any
extra key, sgld catches typos (a deliberate difference, README "Coming from SGLang").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from flask import g

from server.errors import APIError

IGNORED_HEADER = "x-sgld-ignored-fields"

# Features sgld has not got: the field's name -> the feature, as the 400 names it.
UNSUPPORTED = {
    # The finishing models' weights are the server's choice (--frame-interpolation-model-path, --upscaling-model-path).
    "frame_interpolation_model_path": "per-request frame-interpolation weights (the server's "
                                      "--frame-interpolation-model-path chooses them)",
    "upscaling_model_path": "per-request upscaling weights (the server's --upscaling-model-path chooses them)",
    "enhance_prompt": "prompt enhancement",
    "diffusers_kwargs": "the diffusers backend",
    "progressive_mode": "progressive resolution",
    "progressive_levels": "progressive resolution",
    "progressive_delta": "progressive resolution",
    "cfg_gate_step": "CFG gating",
    "skip_softmax_params": "skip-softmax attention",
    "attention_backend_override": "a per-request attention backend (sgld picks it at start-up)",
    "use_diffusion_decoder": "the diffusion decoder",
    "video_path": "video inputs",
    "video_url": "video inputs",
}
# Fields that name a path on the server for it to write: never the client's to choose.
SERVER_PATHS = ("perf_dump_path", "output_path")
# Multipart containers whose JSON object holds more fields (SGLang's and vLLM-Omni's extra_body / extra_params).
CONTAINERS = ("extra_body", "extra_params", "extra_json")
# Values that leave a feature off: SGLang's defaults, and how a form spells them.
OFF = (None, False, "", "false", "False", "0", 0, "null", "none", "None")


@dataclass(frozen=True)
class Endpoint:
    """One endpoint's fields: those sgld reads, those it accepts and ignores, and which it refuses."""

    acts: frozenset[str]
    ignored: frozenset[str]
    unsupported: frozenset[str]
    files: frozenset[str] = frozenset()
    # Form fields that may repeat (a list): SGLang's url / url[].
    lists: frozenset[str] = frozenset()
    # Fields a form may send as repeated ``name[]`` parts (the OpenAI SDK's spelling of a JSON list).
    arrays: frozenset[str] = frozenset({"seed"})

    @property
    def names(self) -> frozenset[str]:
        """Every field the endpoint accepts without an "unknown field" 400."""
        return self.acts | self.ignored | self.unsupported | frozenset(SERVER_PATHS) | frozenset(CONTAINERS)

    def screen(self, values: Mapping[str, Any]) -> list[str]:
        """400 for a field that asks for a missing feature or a server path; the ignored fields present, in order."""
        for name in SERVER_PATHS:
            if values.get(name) not in (None, ""):
                raise APIError(400, f"'{name}' names a path on the server; sgld writes only where it was started to "
                                    "write (--output-path)", param=name, code="unsupported_field")
        for name in self.unsupported:
            if values.get(name) not in OFF and values.get(name) != {}:
                raise APIError(400, f"'{name}' is not supported yet: sgld has no {UNSUPPORTED[name]}", param=name,
                               code="unsupported_feature")
        ignored = [name for name in values if name in self.ignored]
        g.sgld_ignored_fields = ignored
        return ignored


# OpenAI's presentation hints, SGLang's profiling and device knobs, and the settings of features that are off:
# accepted without effect, each still of its JSON type (the OpenAPI document says the same).
IGNORED_TYPES: dict[str, type] = {"quality": str, "generator_device": str, "profile": bool,
                                  "num_profiled_timesteps": int, "profile_all_stages": bool,
                                  "max_sequence_length": int}
IGNORED_MINIMUMS: dict[str, int] = {"max_sequence_length": 1}
_IGNORED = frozenset(IGNORED_TYPES)
# The step caches (TeaCache, Cache-DiT) act per request where the model's family has them (sgld.levers).
STEP_CACHES = frozenset({"enable_teacache", "enable_cache_dit", "cache_dit_params"})
# Finishing after decode (sgld.finishing): upscaling for every output, frame interpolation for videos.
UPSCALING = frozenset({"enable_upscaling", "upscaling_scale"})
INTERPOLATION = frozenset({"enable_frame_interpolation", "frame_interpolation_exp", "frame_interpolation_scale"})
_IMAGE_ACTS = frozenset({"prompt", "model", "n", "size", "response_format", "output_format", "seed", "negative_prompt",
                         "num_inference_steps", "guidance_scale", "user", "loras", "width", "height", "true_cfg_scale",
                         "flow_shift", "output_quality", "output_compression", "task_type"}) | STEP_CACHES | UPSCALING
_IMAGE_UNSUPPORTED = frozenset({"upscaling_model_path", "enhance_prompt", "diffusers_kwargs",
                                "progressive_mode", "progressive_levels", "progressive_delta", "cfg_gate_step",
                                "skip_softmax_params", "attention_backend_override"})

IMAGE_GENERATIONS = Endpoint(_IMAGE_ACTS, _IGNORED | {"style", "background"}, _IMAGE_UNSUPPORTED)
IMAGE_EDITS = Endpoint(_IMAGE_ACTS | {"mask", "url", "url[]", "num_frames"}, _IGNORED | {"background"},
                       _IMAGE_UNSUPPORTED, files=frozenset({"image", "image[]", "mask"}),
                       lists=frozenset({"url", "url[]"}))
VIDEOS = Endpoint(
    frozenset({"prompt", "model", "size", "seconds", "input_reference", "reference_url", "negative_prompt",
               "num_inference_steps", "seed", "guidance_scale", "guidance_scale_2", "true_cfg_scale", "fps",
               "num_frames", "user", "loras", "width", "height", "flow_shift", "n", "num_outputs_per_prompt",
               "output_quality", "output_compression", "x264_preset", "task_type", "audio_guidance_scale",
               "two_stage", "last_image", "reference_images", "reference_images[]"}) | STEP_CACHES | UPSCALING
    | INTERPOLATION,
    _IGNORED,
    (_IMAGE_UNSUPPORTED - {"progressive_mode", "progressive_levels", "progressive_delta"})
    | {"frame_interpolation_model_path", "use_diffusion_decoder", "video_path", "video_url"},
    files=frozenset({"input_reference", "video_reference", "last_image", "reference_images", "reference_images[]"}),
    lists=frozenset({"reference_images", "reference_images[]"}),
)


def add_ignored_header(response):
    """After a request: name the fields it sent that sgld ignored (``x-sgld-ignored-fields``)."""
    ignored = g.get("sgld_ignored_fields")
    if ignored:
        response.headers[IGNORED_HEADER] = ",".join(ignored)
    return response
