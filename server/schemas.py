"""Request parsing and validation (JSON or multipart), and the response objects.

Every check happens before a job is queued, and every failure is a 400 naming the field.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from flask import Request

from sgld.config.schema import RunConfig, ServerConfig
from sgld.errors import UserError

from server.engine import Engine
from server.errors import APIError
from server.store import Job

SIZE_RE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")
# A list of objects in a form, as the OpenAI SDK flattens it: loras[][name]=a, loras[][scale]=0.8, loras[][name]=b ...
LIST_KEY = re.compile(r"^(\w+)\[\]\[(\w+)\]$")


def _form_lists(form) -> dict[str, list[dict]]:
    """The form's flattened lists of objects, rebuilt in order (a key seen again starts the next object)."""
    lists: dict[str, list[dict]] = {}
    for key, value in form.items(multi=True):
        match = LIST_KEY.match(key)
        if not match:
            continue
        items = lists.setdefault(match.group(1), [])
        if not items or match.group(2) in items[-1]:
            items.append({})
        items[-1][match.group(2)] = value
    return lists
MAX_SEED = 2**63 - 1


def check_text_encodes(name: str, value: Any) -> None:
    """400 naming ``name`` when a string in ``value`` is not valid Unicode text (a lone surrogate from a JSON
    ``\\ud800`` escape): it could be neither stored nor written to a log."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad(name, f"'{name}' holds a lone surrogate (an unpaired \\ud800-\\udfff escape); send valid "
                                "Unicode text") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def bad(param: str, message: str, code: str = "invalid_value") -> APIError:
    """A 400 naming ``param``."""
    return APIError(400, message, param=param, code=code)


class Fields:
    """The fields of a JSON object or multipart form, read with typed getters."""

    def __init__(self, request: Request, allowed: set[str], file_fields: set[str] = frozenset()):
        self.files: dict[str, list] = {}
        if request.mimetype == "application/json":
            try:
                data = json.loads(request.get_data())
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
            except RecursionError:  # the parser recurses once per nesting level
                raise APIError(400, "request body is nested too deeply", code="invalid_json") from None
            if not isinstance(data, dict):
                raise APIError(400, "request body must be a JSON object", code="invalid_json")
            self.values: dict[str, Any] = data
        elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            # A part without a name reaches werkzeug's dicts under the key None.
            if any(not isinstance(key, str) for key in (*request.form.keys(), *request.files.keys())):
                raise APIError(400, "a form part has no name (Content-Disposition needs name=\"...\")",
                               code="invalid_form")
            self.values = _form_lists(request.form)
            for key in request.form.keys():
                if LIST_KEY.match(key):
                    continue
                items = request.form.getlist(key)
                if len(items) > 1:
                    raise bad(key, f"field '{key}' is given {len(items)} times; give it once", "duplicate_field")
                self.values[key] = items[0]
            for key in request.files.keys():
                self.files[key] = request.files.getlist(key)
        else:
            raise APIError(
                415,
                f"unsupported content type {request.mimetype or 'none'!r}; send application/json or multipart/form-data",
                code="unsupported_media_type",
            )
        for key in self.values:
            if key not in allowed:
                raise bad(key, f"unknown field '{key}'", "unknown_field")
        for key, value in self.values.items():
            check_text_encodes(key, value)
        for key in self.files:
            if key not in file_fields:
                raise bad(key, f"unexpected file field '{key}'", "unknown_field")

    def has(self, name: str) -> bool:
        """The field is present (JSON null counts as absent: the default applies)."""
        return self.values.get(name) is not None

    def text(self, name: str, *, required: bool = False, max_chars: int = 10000, allow_empty: bool = True) -> Optional[str]:
        value = self.values.get(name)
        if value is None:
            if required:
                raise bad(name, f"'{name}' is required", "missing_required_parameter")
            return None
        if not isinstance(value, str):
            raise bad(name, f"'{name}' must be a string")
        if not allow_empty and not value.strip():
            raise bad(name, f"'{name}' must not be empty")
        if len(value) > max_chars:
            raise bad(name, f"'{name}' is {len(value)} characters; the limit is {max_chars}")
        return value

    def integer(self, name: str, low: int, high: int) -> Optional[int]:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise bad(name, f"'{name}' must be an integer")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad(name, f"'{name}' must be an integer, got {value!r}") from None
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise bad(name, f"'{name}' must be an integer")
        if not low <= value <= high:
            raise bad(name, f"'{name}' must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str, low: float, high: float, *, exclusive_low: bool = False) -> Optional[float]:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise bad(name, f"'{name}' must be a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise bad(name, f"'{name}' must be a number, got {value!r}") from None
        too_low = value <= low if exclusive_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            bound = f"more than {low:g}" if exclusive_low else f"at least {low:g}"
            raise bad(name, f"'{name}' must be {bound} and at most {high:g}, got {value:g}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.values.get(name)
        value = default if value is None else value
        if value not in choices:
            raise bad(name, f"'{name}' must be one of {', '.join(choices)}, got {value!r}")
        return value


def accepts_query(*names: str):
    """Mark a view as taking these query parameters; any other on an API path is a 400 (see create_app)."""

    def mark(view):
        view.query_params = frozenset(names)
        return view

    return mark


def check_query(args, allowed: frozenset) -> None:
    """400 naming the first query parameter the endpoint does not take."""
    for name in args.keys():
        if name not in allowed:
            raise bad(name, f"unknown query parameter '{name}'", "unknown_parameter")


def parse_size(value: Any, max_pixels: int) -> tuple[int, int]:
    """``"WxH"`` -> (width, height), bounded by the server's pixel limit."""
    match = SIZE_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise bad("size", f"'size' must be WIDTHxHEIGHT such as 1280x720, got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise bad("size", f"'size' {width}x{height} must be at least 1x1")
    if width * height > max_pixels:
        raise bad("size", f"'size' {width}x{height} has more than the server's limit of {max_pixels} pixels")
    return width, height


def nearest_frame_count(seconds: float, fps: int, temporal_factor: int) -> int:
    """The model's valid frame count (k * factor + 1) closest to ``seconds`` at ``fps``."""
    frames = max(1, round(seconds * fps))
    k = max(0, round((frames - 1) / temporal_factor))
    return k * temporal_factor + 1


def parse_common(fields: Fields, limits: ServerConfig, *, max_seed: int = MAX_SEED, size_auto: bool = False) -> dict:
    """The options every create request shares: size, negative prompt, steps, seed, guidance (and ``user``).

    ``size_auto``: "auto" (OpenAI's default for edits) leaves the size to the model.
    """
    fields.text("user", max_chars=256)
    options: dict = {}
    if fields.has("size") and not (size_auto and fields.values["size"] == "auto"):
        options["width"], options["height"] = parse_size(fields.values["size"], limits.max_pixels)
    negative = fields.text("negative_prompt", max_chars=limits.max_prompt_chars)
    if negative is not None:
        options["negative_prompt"] = negative
    for name, value in (
        ("num_inference_steps", fields.integer("num_inference_steps", 1, limits.max_steps)),
        ("seed", fields.integer("seed", 0, max_seed)),
        ("guidance_scale", fields.number("guidance_scale", 0, 100)),
    ):
        if value is not None:
            options[name] = value
    return options


def parse_loras(fields: Fields, limits: ServerConfig) -> Optional[list[dict]]:
    """A request's ``loras`` (JSON, or a JSON string in a form): adapters in the LoRA dir, checked now, not loaded.

    400 for a bad entry or a name outside the LoRA dir, 404 (``lora_not_found``) for one it does not hold.
    """
    from sgld.models.lora import UnknownAdapter, request_adapters

    if not fields.has("loras"):
        return None
    value = fields.values["loras"]
    if isinstance(value, str):  # multipart forms carry it as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise bad("loras", "'loras' must be a JSON array of {name, scale}") from None
    if not isinstance(value, list):
        raise bad("loras", "'loras' must be an array of {name, scale}")
    value = [_form_numbers(item) for item in value]
    if len(value) > limits.max_loaded_loras:
        raise bad("loras", f"{len(value)} adapters; this server runs at most {limits.max_loaded_loras} at once")
    try:
        adapters = request_adapters(value, limits.lora_dir)
    except UnknownAdapter as exc:
        raise APIError(404, str(exc), param="loras", code="lora_not_found") from None
    except UserError as exc:
        raise bad("loras", str(exc)) from None
    return [{"name": a.name, "scale": a.scale, "target": a.target} for a in adapters]


def _form_numbers(item):
    """A form's adapter carries its scale as text: the number it spells (anything else stays and is refused)."""
    if isinstance(item, dict) and isinstance(item.get("scale"), str):
        try:
            return {**item, "scale": float(item["scale"])}
        except ValueError:
            return item
    return item


def check_with_engine(engine: Engine, options: dict, renames: Optional[dict[str, str]] = None) -> RunConfig:
    """The engine's check of a request (sizes, frames, image); its failure as a 400 naming the client's field."""
    try:
        return engine.check(**options)
    except UserError as exc:
        param = ENGINE_PARAM_TO_FIELD.get(exc.param or "", exc.param)
        param = (renames or {}).get(param or "", param)
        raise bad(param or "request", str(exc)) from None


# Our names for the engine's option names when an engine check fails: the client's field.
ENGINE_PARAM_TO_FIELD = {"height": "size", "width": "size", "sampling.num_inference_steps": "num_inference_steps",
                         "sampling.guidance_scale": "guidance_scale", "sampling.seed": "seed", "sampling.fps": "fps",
                         "sampling.num_frames": "num_frames", "sampling.height": "size", "sampling.width": "size"}


@dataclass
class ParsedVideo:
    """A validated video request: what to queue and what to answer."""

    prompt: str
    options: dict
    size: str
    seconds: str
    run: RunConfig  # as the engine checked it (the job's batch key comes from it)


def video_object(job: Job) -> dict[str, Any]:
    """The OpenAI ``video`` object of a job."""
    error = {"code": job.error_code, "message": job.error_message} if job.status == "failed" else None
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": job.status,
        "progress": job.progress,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,  # None: kept until deleted (server.retention_s unset)
        "size": job.size,
        "seconds": job.seconds,
        "prompt": job.prompt,
        "error": error,
        "remixed_from_video_id": None,
    }


def read_image_upload(storage, param: str, max_pixels: int):
    """A PIL image from an uploaded file; 400 naming ``param`` when it is not a usable image."""
    from PIL import Image

    data = storage.read()
    if not data:
        raise bad(param, f"'{param}' is an empty file")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise bad(param, f"'{param}' is {width}x{height}; the limit is {max_pixels} pixels")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bad(param, f"'{param}' has too many pixels; the limit is {max_pixels} pixels") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for broken files
        raise bad(param, f"'{param}' is not a readable PNG, JPEG or WebP image") from None
    return image.convert("RGB")
