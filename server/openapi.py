"""The server's OpenAPI 3.0 description (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from sgld.families import FamilySpec, OutputKind, TaskType
from sgld.config.schema import X264Preset, choices
from server.sglang_fields import IGNORED_MINIMUMS, IGNORED_TYPES


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {400: "invalid request", 401: "missing or wrong API key", 404: "not found", 409: "not ready",
            413: "body too large", 415: "unsupported content type", 429: "queue full", 503: "model not loaded"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


SIZE = {"type": "string", "pattern": r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$", "example": "1280x720"}


SEED = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                  {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}]}
# Accepted without effect (named back in the x-sgld-ignored-fields header): OpenAI's hints, SGLang's knobs.
IGNORED = {name: {"type": {str: "string", bool: "boolean", int: "integer"}[kind],
                  **({"minimum": IGNORED_MINIMUMS[name]} if name in IGNORED_MINIMUMS else {})}
           for name, kind in IGNORED_TYPES.items()}


def _shared_fields(limits: Any) -> dict:
    """Fields every create request takes (bounded by this server's limits), SGLang's included."""
    return {
        "prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_chars, "pattern": r"\S"},
        "model": {"type": "string", "description": "any name when the service serves one model (echoed back)"},
        "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": 100},
        "true_cfg_scale": {"type": "number", "minimum": 0, "maximum": 100,
                           "description": "true-CFG models (Qwen-Image) only: their guidance_scale"},
        "flow_shift": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 100},
        "width": {"type": "integer", "minimum": 1, "maximum": 8192},
        "height": {"type": "integer", "minimum": 1, "maximum": 8192},
        "output_quality": {"type": "string", "enum": ["maximum", "high", "medium", "low", "default"]},
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
        "user": {"type": "string", "maxLength": 256},
        # Step caches for this request, where the model's family has them (SGLang's names).
        "enable_teacache": {"type": "boolean"},
        "enable_cache_dit": {"type": "boolean"},
        "cache_dit_params": {"type": "object"},
        # Finishing after decode (the weights are the server's flags).
        "enable_upscaling": {"type": "boolean"},
        "upscaling_scale": {"type": "integer", "minimum": 1, "maximum": 8},
        **IGNORED,
    }


def video_fields(limits: Any) -> dict:
    """The create-video fields, bounded by this server's limits (ServerConfig)."""
    return {
        **_shared_fields(limits),
        "size": {"type": "string", "example": "1280x720", "anyOf": [SIZE, {"enum": [""]}]},
        "seconds": {"type": "string", "pattern": r"^[0-9]{1,4}(\.[0-9]{1,3})?$", "example": "4"},
        "seed": SEED,
        "guidance_scale_2": {"type": "number", "minimum": 0, "maximum": 100},
        "enable_frame_interpolation": {"type": "boolean"},
        "frame_interpolation_exp": {"type": "integer", "minimum": 1, "maximum": 4},
        "frame_interpolation_scale": {"type": "number", "minimum": 0.25, "maximum": 4},
        # Models with sound (LTX-2): the sound's CFG scale, and the two-stage recipe.
        "audio_guidance_scale": {"type": "number", "minimum": 0, "maximum": 100},
        "two_stage": {"type": "boolean"},
        "fps": {"type": "integer", "minimum": 1, "maximum": 120},
        "num_frames": {"type": "integer", "minimum": 1, "maximum": limits.max_frames},
        "n": {"type": "integer", "minimum": 1, "maximum": limits.max_images},
        "num_outputs_per_prompt": {"type": "integer", "minimum": 1, "maximum": limits.max_images},
        "x264_preset": {"type": "string", "enum": list(choices(X264Preset))},
        "frame_interpolation_exp": {"type": "integer"},
        "frame_interpolation_scale": {"type": "number"},
    }


# A request's LoRA adapters (JSON bodies): names in the server's LoRA dir (GET /v1/loras).
LORAS = {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": {"type": "string"}, "scale": {"type": "number"},
    "target": {"type": "string", "enum": ["transformer", "transformer_2", "all"]}}}}


def image_fields(limits: Any) -> dict:
    """The image request fields, bounded by this server's limits (ServerConfig)."""
    return {
        **_shared_fields(limits),
        "n": {"type": "integer", "minimum": 1, "maximum": limits.max_images},
        "size": {"type": "string", "example": "1024x1024", "anyOf": [SIZE, {"enum": ["auto", ""]}]},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
        "output_format": {"type": "string", "enum": ["jpeg", "jpg", "png", "webp"]},
        "seed": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**63 - 1 - limits.max_images},
                           SEED["anyOf"][1]]},
        "task_type": {"type": "string"},
        "background": {"type": "string"},
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            },
            "detail": {"type": "string"},
        },
    },
    "Video": {
        "type": "object",
        "required": ["id", "object", "model", "status", "progress", "created_at", "size", "seconds"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["video"]},
            "model": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "in_progress", "completed", "failed", "expired"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "created_at": {"type": "integer"},
            "completed_at": {"type": "integer", "nullable": True},
            "expires_at": {"type": "integer", "nullable": True},
            "size": {"type": "string"},
            "seconds": {"type": "string"},
            "prompt": {"type": "string", "nullable": True},
            "error": {
                "type": "object",
                "nullable": True,
                "properties": {"code": {"type": "string", "nullable": True}, "message": {"type": "string", "nullable": True}},
            },
            "remixed_from_video_id": {"type": "string", "nullable": True},
            # SGLang's: where to download it, how many outputs, how long it took, the GPU memory peak.
            "quality": {"type": "string"},
            "url": {"type": "string", "nullable": True},
            "urls": {"type": "array", "nullable": True, "items": {"type": "string"}},
            "num_outputs": {"type": "integer"},
            "inference_time_s": {"type": "number", "nullable": True},
            "peak_memory_mb": {"type": "number", "nullable": True},
            # Whether the MP4 has an AAC track (models with sound: LTX-2), and its sample rate.
            "has_audio": {"type": "boolean"},
            "audio_sample_rate": {"type": "integer", "nullable": True},
        },
    },
    "VideoList": {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("Video")},
            "first_id": {"type": "string", "nullable": True},
            "last_id": {"type": "string", "nullable": True},
            "has_more": {"type": "boolean"},
        },
    },
    "VideoDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted", "status"],
        "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["video.deleted"]},
                       "deleted": {"type": "boolean"}, "status": {"type": "string", "enum": ["deleted"]}},
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["id", "created", "data"],
        "properties": {
            "id": {"type": "string"},
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "properties": {
                "url": {"type": "string"}, "b64_json": {"type": "string"}, "revised_prompt": {"type": "string"}}}},
            "inference_time_s": {"type": "number", "nullable": True},
            "peak_memory_mb": {"type": "number", "nullable": True},
        },
    },
    "Image": {
        "type": "object",
        "required": ["id", "object", "model", "status", "created", "data"],
        "properties": {
            "id": {"type": "string"}, "object": {"type": "string", "enum": ["image"]}, "model": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "in_progress", "completed", "failed", "expired"]},
            "created": {"type": "integer"}, "completed_at": {"type": "integer", "nullable": True},
            "expires_at": {"type": "integer", "nullable": True}, "size": {"type": "string"},
            "prompt": {"type": "string"},
            "error": {"type": "object", "nullable": True, "properties": {
                "code": {"type": "string", "nullable": True}, "message": {"type": "string", "nullable": True}}},
            "data": {"type": "array", "items": {"type": "object", "properties": {"url": {"type": "string"}}}},
            "inference_time_s": {"type": "number", "nullable": True},
            "peak_memory_mb": {"type": "number", "nullable": True},
        },
    },
    "ImageDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted", "status"],
        "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["image.deleted"]},
                       "deleted": {"type": "boolean"}, "status": {"type": "string", "enum": ["deleted"]}},
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by", "root", "task_type", "num_gpus", "dit_precision",
                     "vae_precision"],
        "properties": {
            "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            # SGLang's extensions: the model path, what it does, and how it runs.
            "root": {"type": "string"}, "task_type": {"type": "string", "enum": [t.value for t in TaskType]},
            "num_gpus": {"type": "integer"}, "dit_precision": {"type": "string"}, "vae_precision": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _ref("Model")}},
    },
    "LoraList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": {
            "type": "object", "required": ["name", "object", "file_size", "target_modules", "loaded"],
            "properties": {"name": {"type": "string"}, "object": {"type": "string", "enum": ["lora"]},
                           "file_size": {"type": "integer"}, "target_modules": {"type": "array", "items": {"type": "string"}},
                           "loaded": {"type": "boolean"}}}}},
    },
    "LoraDone": {
        "type": "object",
        "required": ["status", "success", "message"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "success": {"type": "boolean"},
                       "message": {"type": "string"}},
    },
    "SGLangLoraList": {
        "type": "object",
        "required": ["loaded_adapters", "active", "object", "data"],
        "properties": {
            "loaded_adapters": {"type": "array", "items": {"type": "object", "required": ["nickname", "path"],
                                                           "properties": {"nickname": {"type": "string"},
                                                                          "path": {"type": "string"}}}},
            "active": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
            "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model"],
        "properties": {"status": {"type": "string", "enum": ["ok", "loading", "error"]}, "model": {"type": "string"},
                       "queued": {"type": "integer"}, "message": {"type": "string"}},
    },
}

VIDEO_ID = {"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}}
FILE = {"type": "string", "format": "binary"}


def _body(*media: tuple[str, dict]) -> dict:
    return {"required": True, "content": {kind: {"schema": schema} for kind, schema in media}}


def _object(properties: dict, required: list[str]) -> dict:
    # An optional field sent as JSON null takes its default, as if it were left out.
    properties = {name: schema if name in required or schema.get("format") == "binary" else {**schema, "nullable": True}
                  for name, schema in properties.items()}
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def request_schemas(limits: Any, spec: FamilySpec) -> dict[str, Any]:
    """The request bodies, bounded by this server's limits and what the model takes (how many input images an edit
    takes; MiniMax-H3's last keyframe and reference images)."""
    max_input_images = spec.max_input_images
    video, image = video_fields(limits), image_fields(limits)
    if spec.takes_last_image:
        video["last_image"] = {"type": "string", "pattern": "^(https?|data):"}
    if spec.max_reference_images:
        video["reference_images"] = {"type": "array", "maxItems": spec.max_reference_images,
                                     "items": {"type": "string", "pattern": "^(https?|data):"}}
    files = {name: FILE for name in ("last_image",) if name in video}
    if "reference_images" in video:  # uploads: repeated reference_images[] parts
        files["reference_images[]"] = {"type": "array", "items": FILE, "maxItems": spec.max_reference_images}
    # The input images: uploaded (image, or image[] parts), or named by URL (SGLang's url / url[]).
    urls = {"type": "array", "maxItems": max_input_images, "items": {"type": "string", "pattern": "^(https?|data):"}}
    edit = {**image, "num_frames": {"type": "integer", "minimum": 1, "maximum": 1}, "url": urls, "url[]": urls}
    edit_form = _object({**edit, "image": FILE}, ["prompt"])
    if max_input_images > 1:  # several images as image[] parts (one may come as image)
        edit_form = _object({**edit, "image": FILE, "image[]": {"type": "array", "items": FILE,
                                                                  "maxItems": max_input_images}}, ["prompt"])
        edit_form["anyOf"] = [{"required": ["image"]}, {"required": ["image[]"]}, {"required": ["url"]},
                              {"required": ["url[]"]}]
    else:
        edit_form["anyOf"] = [{"required": ["image"]}, {"required": ["url"]}, {"required": ["url[]"]}]
    reference = {"input_reference": {"type": "string", "pattern": "^(https?|data):"},
                 "reference_url": {"type": "string", "pattern": "^(https?|data):"}}
    return {
        "VideoCreate": _object({**video, "loras": LORAS}, ["prompt"]),
        "VideoCreateTextForm": _object(video, ["prompt"]),
        "VideoCreateForm": _object({**video, "input_reference": FILE}, ["prompt"]),
        "VideoFromImageForm": _object({**video, "input_reference": FILE, "reference_url": reference["reference_url"],
                                       **files}, ["prompt"]),
        "VideoFromImage": _object({**video, **reference, "loras": LORAS}, ["prompt"]),
        "ImageGenerate": _object({**image, "style": {"type": "string"}, "loras": LORAS}, ["prompt"]),
        "ImageEditForm": edit_form,
    }


def _video_create_body(needs_image: bool, takes_image: bool) -> dict:
    """Text-to-video: JSON or form; image-to-video: a form with the ``input_reference`` file (TI2V: optional)."""
    if takes_image:  # the first frame uploaded, or named by URL in JSON (required or optional: TI2V)
        return _body(("application/json", _ref("VideoFromImage")), ("multipart/form-data", _ref("VideoFromImageForm")))
    return _body(("application/json", _ref("VideoCreate")), ("multipart/form-data", _ref("VideoCreateTextForm")))


def _video_paths(needs_image: bool, takes_image: bool) -> dict:
    return {
        "/v1/videos": {
            "post": {
                "summary": "create a video job",
                "requestBody": _video_create_body(needs_image, takes_image),
                "responses": {"200": _json(_ref("Video"), "queued job"), **_errors(400, 401, 413, 415, 429, 503)},
            },
            "get": {
                "summary": "list video jobs",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "string"}},  # unknown: an empty page
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                ],
                "responses": {"200": _json(_ref("VideoList"), "a page of jobs (empty after an unknown cursor)"),
                              **_errors(400, 401)},
            },
        },
        "/v1/videos/{video_id}": {
            "get": {"summary": "retrieve a video job", "parameters": [VIDEO_ID],
                    "responses": {"200": _json(_ref("Video"), "the job"), **_errors(401, 404)}},
            "delete": {"summary": "cancel and delete a video job", "parameters": [VIDEO_ID],
                       "responses": {"200": _json(_ref("VideoDeleted"), "deleted"), **_errors(401, 404)}},
        },
        "/v1/videos/{video_id}/content": {
            "get": {
                "summary": "download the MP4 or its thumbnail",
                "parameters": [VIDEO_ID, {"name": "variant", "in": "query", "schema": {
                    "type": "string", "anyOf": [{"enum": ["video", "thumbnail"]}, {"pattern": "^[0-9]{1,2}$"}]}}],
                "responses": {
                    "200": {"description": "file", "content": {"video/mp4": {"schema": FILE}, "image/webp": {"schema": FILE}}},
                    **_errors(400, 401, 404, 409),
                },
            }
        },
    }


def _image_path(edit: bool) -> dict:
    if edit:
        path, summary, body = "/v1/images/edits", "image and text to image", _body(("multipart/form-data", _ref("ImageEditForm")))
    else:
        path, summary, body = "/v1/images/generations", "text to image", _body(("application/json", _ref("ImageGenerate")))
    return {path: {"post": {
        "summary": summary, "requestBody": body,
        "responses": {"200": _json(_ref("ImagesResponse"), "images"), **_errors(400, 401, 413, 415, 429, 503)},
    }}}


IMAGE_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}
IMAGE_JOB_PATHS = {
    "/v1/images/{image_id}": {
        "get": {"summary": "an image job", "parameters": [IMAGE_ID],
                "responses": {"200": _json(_ref("Image"), "the job"), **_errors(401, 404)}},
        "delete": {"summary": "cancel and delete an image job", "parameters": [IMAGE_ID],
                   "responses": {"200": _json(_ref("ImageDeleted"), "deleted"), **_errors(401, 404)}},
    },
    "/v1/images/{image_id}/content": {"get": {
        "summary": "one image of a completed job",
        "parameters": [IMAGE_ID, {"name": "variant", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,2}$"}}],
        "responses": {"200": {"description": "file", "content": {
            "image/jpeg": {"schema": FILE}, "image/png": {"schema": FILE}, "image/webp": {"schema": FILE}}},
            **_errors(400, 401, 404, 409)},
    }},
}


def _lora_paths() -> dict:
    """The LoRA endpoints: our listing and SGLang's control endpoints, with SGLang's semantics."""
    listing = {"get": {"summary": "the LoRA dir's adapters", "responses": {
        "200": _json(_ref("LoraList"), "adapters"), **_errors(401)}}}
    done = {"200": _json(_ref("LoraDone"), "done"), **_errors(400, 401, 404, 503)}
    one_or_many = lambda item: {"anyOf": [item, {"type": "array", "minItems": 1, "items": item}]}  # noqa: E731
    target = one_or_many({"type": "string", "enum": ["all", "transformer", "transformer_2", "critic"]})
    set_lora = _object({"lora_nickname": one_or_many({"type": "string", "minLength": 1, "pattern": r"\S"}),
                        "lora_path": one_or_many({"type": "string", "minLength": 1, "nullable": True}),
                        "target": target, "strength": one_or_many({"type": "number"}),
                        "merge_mode": {"type": "string", "enum": ["auto", "merge", "dynamic"]},
                        "lora_alpha": {"type": "integer"}}, ["lora_nickname"])
    merge = _object({"target": target, "strength": {"type": "number"}}, [])
    unmerge = _object({"target": target}, [])
    optional = lambda schema: {"required": False, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    return {
        "/v1/loras": listing,
        "/v1/list_loras": {"get": {"summary": "SGLang's listing: adapters by nickname, the active ones per DiT",
                                   "responses": {"200": _json(_ref("SGLangLoraList"), "adapters"), **_errors(401)}}},
        "/v1/set_lora": {"post": {"summary": "the adapters requests run with by default, by nickname (SGLang)",
                                  "requestBody": _body(("application/json", set_lora)), "responses": done}},
        "/v1/merge_lora_weights": {"post": {"summary": "the adapters on again (SGLang)", "requestBody": optional(merge),
                                            "responses": done}},
        "/v1/unmerge_lora_weights": {"post": {"summary": "the adapters off: the base weights (SGLang)",
                                              "requestBody": optional(unmerge), "responses": done}},
    }


def openapi_spec(limits: Any, spec: FamilySpec, require_key: bool) -> dict[str, Any]:
    """The OpenAPI document of this server: the endpoints and bounds of its model and limits.

    Only the endpoints the model's family serves are described (the others answer 400
    ``wrong_endpoint``); ``require_key``: the server was started with an API key.
    """
    if spec.output == OutputKind.video:
        model_paths = _video_paths(spec.needs_image, spec.takes_image)
    elif spec.takes_image and not spec.needs_image:  # text to image, or with reference images (FLUX.2)
        model_paths = {**_image_path(edit=False), **_image_path(edit=True)}
    else:
        model_paths = _image_path(edit=spec.needs_image)
    if spec.output == OutputKind.image:
        model_paths.update(IMAGE_JOB_PATHS)
    return {
        "openapi": "3.0.3",
        "info": {"title": "sgld", "version": "0.1.0", "description": "OpenAI-compatible video and image generation"},
        "components": {
            "schemas": {**SCHEMAS, **request_schemas(limits, spec)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if require_key else [],
        "paths": {
            "/health": {"get": {"summary": "readiness", "security": [], "responses": {
                "200": _json(_ref("Health"), "model loaded"), "503": _json(_ref("Health"), "loading or failed")}}},
            "/v1/models": {"get": {"summary": "the served model", "responses": {
                "200": _json(_ref("ModelList"), "models"), **_errors(401)}}},
            "/v1/models/{model}": {"get": {
                "summary": "the served model by id (its path or config name)",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Model"), "the model"), **_errors(401, 404)}}},
            **model_paths,
            **_lora_paths(),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}}},
        },
    }
