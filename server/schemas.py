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
from sgld.families import FamilySpec, GuidanceKind

from server.engine import Engine
from server.errors import APIError
from server.sglang_fields import CONTAINERS, IGNORED_MINIMUMS, IGNORED_TYPES, Endpoint

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


def check_ignored_type(name: str, value: Any, form: bool) -> None:
    """A field accepted without effect must still be of its type (``IGNORED_TYPES``, ``IGNORED_MINIMUMS``; a form
    sends text); a 400 naming it otherwise. Null is absent."""
    kind, minimum = IGNORED_TYPES[name], IGNORED_MINIMUMS.get(name)
    if value is None:
        return
    if form and isinstance(value, str) and kind is not str:  # "true" / "12" from a form part
        value = {"true": True, "false": False}.get(value.lower(), value) if kind is bool else _form_number(value)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
    else:
        ok = isinstance(value, kind)
    if not ok:
        what = {str: "a string", bool: "true or false", int: "an integer"}[kind]
        raise bad(name, f"'{name}' is accepted and ignored, but must be {what}"
                        f"{f' of at least {minimum}' if minimum is not None else ''}")


def bad(param: str, message: str, code: str = "invalid_value") -> APIError:
    """A 400 naming ``param``."""
    return APIError(400, message, param=param, code=code)


class Fields:
    """The fields of a JSON object or multipart form, read with typed getters.

    ``endpoint`` says which fields it takes (``server.sglang_fields``): any other is a 400 naming it; a field
    asking for a feature sgld lacks, or naming a server path, is a 400 too; ``ignored`` lists the fields
    accepted without effect.
    """

    def __init__(self, request: Request, endpoint: Endpoint, *, empty_ok: bool = False):
        """``empty_ok``: a request without a body has no fields (SGLang's control endpoints take that)."""
        self.files: dict[str, list] = {}
        if empty_ok and not request.get_data():
            self.values = {}
        elif request.mimetype == "application/json":
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
                if key in endpoint.lists:
                    self.values[key] = items
                elif key.endswith("[]") and key[:-2] in endpoint.arrays:
                    self.values[key[:-2]] = [_form_number(item) for item in items]
                elif len(items) > 1:
                    raise bad(key, f"field '{key}' is given {len(items)} times; give it once", "duplicate_field")
                else:
                    self.values[key] = items[0]
            for key in request.files.keys():
                self.files[key] = request.files.getlist(key)
        else:
            raise APIError(
                415,
                f"unsupported content type {request.mimetype or 'none'!r}; send application/json or multipart/form-data",
                code="unsupported_media_type",
            )
        self._flatten_containers()
        for key in self.values:
            if key not in endpoint.names:
                raise bad(key, f"unknown field '{key}'", "unknown_field")
        for key, value in self.values.items():
            check_text_encodes(key, value)
        for key in self.files:
            if key not in endpoint.files:
                raise bad(key, f"unexpected file field '{key}'", "unknown_field")
        self.ignored = endpoint.screen(self.values)
        form = request.mimetype != "application/json"
        for name in self.ignored:
            if name in IGNORED_TYPES:  # the create endpoints' (the LoRA endpoints ignore others, of any type)
                check_ignored_type(name, self.values[name], form)

    def _flatten_containers(self) -> None:
        """Fields sent inside ``extra_body`` / ``extra_params`` / ``extra_json`` (an object, or its JSON text in a
        form) join the top level, as SGLang reads them; a field given in both places must agree."""
        for container in CONTAINERS:
            inner = self.values.pop(container, None)
            if inner is None:
                continue
            if isinstance(inner, str):
                try:
                    inner = json.loads(inner) if inner.strip() else {}
                except (ValueError, RecursionError):
                    raise bad(container, f"'{container}' must be a JSON object") from None
            if not isinstance(inner, dict):
                raise bad(container, f"'{container}' must be a JSON object")
            for key, value in inner.items():
                if key in self.values and self.values[key] != value and str(self.values[key]) != str(value):
                    raise bad(key, f"'{key}' is given at the top level and in '{container}' with different values",
                              "duplicate_field")
                self.values[key] = value

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

    def boolean(self, name: str) -> Optional[bool]:
        """A JSON boolean, or a form's true/false (1/0); None when absent."""
        value = self.values.get(name)
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad(name, f"'{name}' must be true or false, got {value!r}")

    def json_object(self, name: str) -> Optional[dict]:
        """A JSON object, or its JSON text in a form; None when absent."""
        value = self.values.get(name)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else None
            except (ValueError, RecursionError):
                raise bad(name, f"'{name}' must be a JSON object") from None
        if value is not None and not isinstance(value, dict):
            raise bad(name, f"'{name}' must be a JSON object")
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


def parse_common(fields: Fields, limits: ServerConfig, spec: FamilySpec, *, outputs: int = 1,
                 max_seed: int = MAX_SEED, size_auto: bool = False) -> dict:
    """The options every create request shares: size (or width/height), negative prompt, steps, seeds, guidance,
    flow shift and output quality (and ``user``, ``task_type``); ``outputs``: how many the request makes.

    An omitted or empty ``size`` is the model's default; ``size_auto``: "auto" (OpenAI's default for edits)
    leaves the size to the model too.
    """
    fields.text("user", max_chars=256)
    check_task_type(fields, spec)
    options: dict = {}
    size = fields.values.get("size")
    if size not in (None, "") and not (size_auto and size == "auto"):
        options["width"], options["height"] = parse_size(size, limits.max_pixels)
    for name in ("width", "height"):  # SGLang's: they win over size
        value = fields.integer(name, 1, limits.max_pixels)
        if value is not None:
            options[name] = value
    if "width" in options and "height" in options and options["width"] * options["height"] > limits.max_pixels:
        raise bad("width", f"{options['width']}x{options['height']} has more than the server's limit of "
                           f"{limits.max_pixels} pixels")
    negative = fields.text("negative_prompt", max_chars=limits.max_prompt_chars)
    if negative is not None:
        options["negative_prompt"] = negative
    for name, value in (
        ("num_inference_steps", fields.integer("num_inference_steps", 1, limits.max_steps)),
        ("guidance_scale", parse_guidance(fields, spec)),
        ("flow_shift", fields.number("flow_shift", 0, 100, exclusive_low=True)),
        ("output_compression", parse_compression(fields)),
    ):
        if value is not None:
            options[name] = value
    options.update(parse_seeds(fields, outputs, max_seed))
    for name, value in (("enable_teacache", fields.boolean("enable_teacache")),  # the engine checks the family
                        ("enable_cache_dit", fields.boolean("enable_cache_dit")),
                        ("cache_dit_params", fields.json_object("cache_dit_params")),
                        # Finishing: the engine checks the bounds (sgld.config.finishing) and skips interpolation
                        # for images; fields an endpoint does not take never reach here (its screen refuses them).
                        ("enable_upscaling", fields.boolean("enable_upscaling")),
                        ("upscaling_scale", fields.integer("upscaling_scale", 1, 8)),
                        ("enable_frame_interpolation", fields.boolean("enable_frame_interpolation")),
                        ("frame_interpolation_exp", fields.integer("frame_interpolation_exp", 1, 4)),
                        ("frame_interpolation_scale", fields.number("frame_interpolation_scale", 0.25, 4))):
        if value is not None:
            options[name] = value
    return options


def check_task_type(fields: Fields, spec: FamilySpec) -> None:
    """SGLang's ``task_type``: the model's own task (any other is a 400 naming it)."""
    task = fields.text("task_type", max_chars=16)
    if task is not None and task.upper() != spec.task.value:
        raise bad("task_type", f"task_type {task!r} is not this model's; it does {spec.task.value}")


def parse_guidance(fields: Fields, spec: FamilySpec) -> Optional[float]:
    """``guidance_scale``, or SGLang's ``true_cfg_scale`` on the models whose guidance is true CFG (Qwen-Image)."""
    guidance = fields.number("guidance_scale", 0, 100)
    true_cfg = fields.number("true_cfg_scale", 0, 100)
    if true_cfg is None:
        return guidance
    if spec.guidance != GuidanceKind.true_cfg:
        raise bad("true_cfg_scale", f"true_cfg_scale applies to true-CFG models (Qwen-Image); this model's guidance "
                                    f"is {spec.guidance.value}: use guidance_scale")
    if guidance is not None and guidance != true_cfg:
        raise bad("true_cfg_scale", "guidance_scale and true_cfg_scale are one setting on this model; give one")
    return true_cfg


def parse_compression(fields: Fields) -> Optional[int]:
    """JPEG/WebP/MP4 quality 0-100: SGLang's ``output_compression``, else its ``output_quality`` level; None for
    the writers' defaults (``output_quality: default`` included)."""
    from sgld.outputs import QUALITY_LEVELS

    compression = fields.integer("output_compression", 0, 100)
    level = fields.choice("output_quality", (*QUALITY_LEVELS, "default"), "default")
    return compression if compression is not None else QUALITY_LEVELS.get(level)


def parse_seeds(fields: Fields, outputs: int, max_seed: int) -> dict:
    """``seed``: one (outputs use seed, seed+1, ...), or SGLang's list with one seed per output (``seeds``)."""
    value = fields.values.get("seed")
    if not isinstance(value, list):
        seed = fields.integer("seed", 0, max_seed)
        return {} if seed is None else {"seed": seed}
    if len(value) != outputs:
        raise bad("seed", f"'seed' lists {len(value)} seeds for {outputs} output(s); give one per output")
    seeds = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_SEED:
            raise bad("seed", f"'seed' must list integers between 0 and {MAX_SEED}, got {item!r}")
        seeds.append(item)
    return {"seed": seeds[0], "seeds": seeds}


def parse_outputs(fields: Fields, most: int) -> int:
    """How many outputs a request makes: ``n``, or SGLang's ``num_outputs_per_prompt`` (which wins)."""
    n = fields.integer("num_outputs_per_prompt", 1, most)
    return n if n is not None else fields.integer("n", 1, most) or 1


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


def _form_number(text: str):
    """A form's list item: the integer it spells, else the text (refused by the field's check)."""
    try:
        return int(text)
    except ValueError:
        return text


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
                         "sampling.num_frames": "num_frames", "sampling.height": "size", "sampling.width": "size",
                         "sampling.enable_teacache": "enable_teacache", "sampling.enable_cache_dit": "enable_cache_dit",
                         "sampling.cache_dit_params": "cache_dit_params", "sampling.flow_shift": "flow_shift",
                         "sampling.guidance_scale_2": "guidance_scale_2", "output.compression": "output_compression",
                         "output.x264_preset": "x264_preset",
                         "finishing.frame_interpolation_exp": "frame_interpolation_exp",
                         "finishing.frame_interpolation_scale": "frame_interpolation_scale",
                         "finishing.upscaling_scale": "upscaling_scale",
                         "finishing.frame_interpolation_model_path": "enable_frame_interpolation",
                         "finishing.upscaling_model_path": "enable_upscaling"}


@dataclass
class ParsedVideo:
    """A validated video request: what to queue and what to answer."""

    prompt: str
    options: dict
    size: str
    seconds: str
    run: RunConfig  # as the engine checked it (the job's batch key comes from it)
    requested_model: Optional[str] = None  # the model name the request gave (echoed back)


def read_image_upload(storage, param: str, max_pixels: int):
    """A PIL image from an uploaded file (or the bytes of one); 400 naming ``param`` when it is not a usable image."""
    from PIL import Image

    data = storage if isinstance(storage, bytes) else storage.read()
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
