"""The browser playground: one static page at ``/`` and ``/playground`` that uses the public API."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request, send_from_directory

from server.auth import has_api_key
from server.context import service
from sgld.models.lora import lora_files

STATIC = Path(__file__).resolve().parent / "playground"
bp = Blueprint("playground", __name__)


@bp.get("/")
@bp.get("/playground")
def page():
    """The playground page."""
    return send_from_directory(STATIC, "index.html")


@bp.get("/playground/<any('app.js', 'style.css'):name>")
def asset(name: str):
    """The page's script and style sheet (served locally: no CDN)."""
    return send_from_directory(STATIC, name)


@bp.get("/playground/info")
def info():
    """What the page needs to build its form: the model, its kind and defaults, whether a key is required.

    With an API key set, a request without it learns only that a key is needed: the adapters and
    defaults are the API's data, which needs the key.
    """
    svc = service()
    run = svc.run
    if run.server.api_key and not has_api_key(request.headers, run.server.api_key):
        return jsonify({"api_key_required": True})
    spec = svc.folder_model.spec
    s = run.sampling
    return jsonify({
        "model": svc.model_id,
        "kind": spec.output,
        "needs_image": spec.needs_image,
        "takes_image": spec.takes_image,
        "max_input_images": spec.max_input_images,
        "api_key_required": bool(run.server.api_key),
        # The LoRA dir's adapters a request may name (null: the server takes none).
        "loras": [name for name, _ in lora_files(run.server.lora_dir)] if run.server.lora_dir else None,
        "defaults": {
            "width": s.width, "height": s.height, "num_frames": s.num_frames, "fps": s.fps,
            "num_inference_steps": s.num_inference_steps, "guidance_scale": s.guidance_scale,
            "seed": s.seed, "negative_prompt": s.negative_prompt,
        },
    })
