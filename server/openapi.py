"""The server's OpenAPI 3.0 description (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {400: "invalid request", 401: "missing or wrong API key", 404: "not found", 409: "not ready",
            413: "body too large", 415: "unsupported content type", 429: "queue full", 503: "model not loaded"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


VIDEO_FIELDS = {
    "prompt": {"type": "string", "minLength": 1},
    "model": {"type": "string"},
    "size": {"type": "string", "example": "1280x720"},
    "seconds": {"type": "string", "example": "4"},
    "negative_prompt": {"type": "string"},
    "num_inference_steps": {"type": "integer", "minimum": 1},
    "seed": {"type": "integer", "minimum": 0},
    "guidance_scale": {"type": "number", "minimum": 0},
    "fps": {"type": "integer", "minimum": 1, "maximum": 120},
    "num_frames": {"type": "integer", "minimum": 1},
    "user": {"type": "string"},
}

IMAGE_FIELDS = {
    "prompt": {"type": "string", "minLength": 1},
    "model": {"type": "string"},
    "n": {"type": "integer", "minimum": 1},
    "size": {"type": "string", "example": "1024x1024"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"]},
    "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
    "seed": {"type": "integer", "minimum": 0},
    "negative_prompt": {"type": "string"},
    "num_inference_steps": {"type": "integer", "minimum": 1},
    "guidance_scale": {"type": "number", "minimum": 0},
    "user": {"type": "string"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
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
            "status": {"type": "string", "enum": ["queued", "in_progress", "completed", "failed"]},
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
        "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["video.deleted"]}, "deleted": {"type": "boolean"}},
    },
    "VideoCreate": {"type": "object", "required": ["prompt"], "properties": VIDEO_FIELDS},
    "VideoCreateForm": {
        "type": "object",
        "required": ["prompt"],
        "properties": {**VIDEO_FIELDS, "input_reference": {"type": "string", "format": "binary"}},
    },
    "ImageGenerate": {"type": "object", "required": ["prompt"], "properties": IMAGE_FIELDS},
    "ImageEditForm": {
        "type": "object",
        "required": ["prompt", "image"],
        "properties": {**IMAGE_FIELDS, "image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"}},
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "required": ["b64_json"], "properties": {"b64_json": {"type": "string"}}}},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}},
                },
            },
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


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "sgld", "version": "0.1.0", "description": "OpenAI-compatible video and image generation"},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"summary": "readiness", "security": [], "responses": {
                "200": _json(_ref("Health"), "model loaded"), "503": _json(_ref("Health"), "loading or failed")}}},
            "/v1/models": {"get": {"summary": "the served model", "responses": {
                "200": _json(_ref("ModelList"), "models"), **_errors(401)}}},
            "/v1/videos": {
                "post": {
                    "summary": "create a video job",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("VideoCreate")},
                        "multipart/form-data": {"schema": _ref("VideoCreateForm")}}},
                    "responses": {"200": _json(_ref("Video"), "queued job"), **_errors(400, 401, 413, 415, 429, 503)},
                },
                "get": {
                    "summary": "list video jobs",
                    "parameters": [
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                    ],
                    "responses": {"200": _json(_ref("VideoList"), "a page of jobs"), **_errors(400, 401)},
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
                        "200": {"description": "file", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}},
                                                                   "image/webp": {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors(400, 401, 404, 409),
                    },
                }
            },
            "/v1/images/generations": {
                "post": {
                    "summary": "text to image",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ImageGenerate")}}},
                    "responses": {"200": _json(_ref("ImagesResponse"), "images"), **_errors(400, 401, 413, 415, 429, 503)},
                }
            },
            "/v1/images/edits": {
                "post": {
                    "summary": "image and text to image",
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _ref("ImageEditForm")}}},
                    "responses": {"200": _json(_ref("ImagesResponse"), "images"), **_errors(400, 401, 413, 415, 429, 503)},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}}},
        },
    }
