"""The server's OpenAPI 3.0 description (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from sgld.families import FamilySpec, OutputKind, TaskType


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {400: "invalid request", 401: "missing or wrong API key", 404: "not found", 409: "not ready",
            413: "body too large", 415: "unsupported content type", 429: "queue full", 503: "model not loaded"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


SIZE = {"type": "string", "pattern": r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$", "example": "1280x720"}
JOB_ID = r"^(video|image)_[0-9a-f]{32}$"


def video_fields(limits: Any) -> dict:
    """The create-video fields, bounded by this server's limits (ServerConfig)."""
    return {
        "prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_chars, "pattern": r"\S"},
        "model": {"type": "string"},
        "size": SIZE,
        "seconds": {"type": "string", "pattern": r"^[0-9]{1,4}(\.[0-9]{1,3})?$", "example": "4"},
        "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": 100},
        "fps": {"type": "integer", "minimum": 1, "maximum": 120},
        "num_frames": {"type": "integer", "minimum": 1, "maximum": limits.max_frames},
        "user": {"type": "string", "maxLength": 256},
    }


# A request's LoRA adapters (JSON bodies): names in the server's LoRA dir (GET /v1/loras).
LORAS = {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": {"type": "string"}, "scale": {"type": "number"},
    "target": {"type": "string", "enum": ["transformer", "transformer_2", "all"]}}}}


def image_fields(limits: Any) -> dict:
    """The image request fields, bounded by this server's limits (ServerConfig)."""
    return {
        "prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_chars, "pattern": r"\S"},
        "model": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": limits.max_images},
        "size": {"type": "string", "example": "1024x1024", "anyOf": [SIZE, {"enum": ["auto"]}]},
        "response_format": {"type": "string", "enum": ["b64_json"]},  # url is refused with a 400
        "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1 - limits.max_images},
        "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": 100},
        "user": {"type": "string", "maxLength": 256},
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
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "required": ["b64_json"], "properties": {"b64_json": {"type": "string"}}}},
        },
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
        "required": ["success", "message"],
        "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}},
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


def request_schemas(limits: Any, max_input_images: int = 1) -> dict[str, Any]:
    """The request bodies, bounded by this server's limits (and how many input images an edit takes)."""
    video, image = video_fields(limits), image_fields(limits)
    edit_form = _object({**image, "image": FILE}, ["prompt", "image"])
    if max_input_images > 1:  # several images as image[] parts (one may come as image)
        edit_form = _object({**image, "image": FILE, "image[]": {"type": "array", "items": FILE,
                                                                   "maxItems": max_input_images}}, ["prompt"])
        edit_form["anyOf"] = [{"required": ["image"]}, {"required": ["image[]"]}]
    return {
        "VideoCreate": _object({**video, "loras": LORAS}, ["prompt"]),
        "VideoCreateTextForm": _object(video, ["prompt"]),
        "VideoCreateForm": _object({**video, "input_reference": FILE}, ["prompt"]),
        "VideoFromImageForm": _object({**video, "input_reference": FILE}, ["prompt", "input_reference"]),
        "ImageGenerate": _object({**image, "loras": LORAS}, ["prompt"]),
        "ImageEditForm": edit_form,
    }


def _video_create_body(needs_image: bool, takes_image: bool) -> dict:
    """Text-to-video: JSON or form; image-to-video: a form with the ``input_reference`` file (TI2V: optional)."""
    if needs_image:
        return _body(("multipart/form-data", _ref("VideoFromImageForm")))
    if takes_image:
        return _body(("application/json", _ref("VideoCreate")), ("multipart/form-data", _ref("VideoCreateTextForm")))
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
                    {"name": "after", "in": "query", "schema": {"type": "string", "pattern": JOB_ID}},
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
                "parameters": [VIDEO_ID, {"name": "variant", "in": "query", "schema": {"type": "string", "enum": ["video", "thumbnail"]}}],
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


def _lora_paths() -> dict:
    """The LoRA endpoints: our listing and SGLang's control endpoints (400 where the server has no adapters)."""
    listing = {"get": {"summary": "the LoRA dir's adapters", "responses": {
        "200": _json(_ref("LoraList"), "adapters"), **_errors(401)}}}
    done = {"200": _json(_ref("LoraDone"), "done"), **_errors(400, 401, 404, 503)}
    set_lora = _object({"lora_path": {"type": "string"}, "lora_nickname": {"type": "string"},
                        "strength": {"type": "number"}, "target": {"type": "string"}}, ["lora_path"])
    return {
        "/v1/loras": listing,
        "/v1/list_loras": listing,
        "/v1/set_lora": {"post": {"summary": "the server's default adapters (SGLang)",
                                  "requestBody": _body(("application/json", set_lora)), "responses": done}},
        "/v1/merge_lora_weights": {"post": {"summary": "fuse the active adapters (SGLang)", "responses": done}},
        "/v1/unmerge_lora_weights": {"post": {"summary": "unfuse them (SGLang)", "responses": done}},
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
    return {
        "openapi": "3.0.3",
        "info": {"title": "sgld", "version": "0.1.0", "description": "OpenAI-compatible video and image generation"},
        "components": {
            "schemas": {**SCHEMAS, **request_schemas(limits, spec.max_input_images)},
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
