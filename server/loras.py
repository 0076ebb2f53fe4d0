"""LoRA adapters on a server: ``GET /v1/loras`` and SGLang's ``/v1/set_lora``, ``/v1/merge_lora_weights``,
``/v1/unmerge_lora_weights``, ``/v1/list_loras``.

Requests name adapters by their path in the server's LoRA dir (``--lora-dir``); nothing outside it is read.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from sgld.errors import UserError

from server.context import ready_service, service
from server.errors import APIError
from server.schemas import bad

bp = Blueprint("loras", __name__, url_prefix="/v1")


def _listing() -> dict:
    from sgld.models.lora import adapter_layers, lora_files

    svc = service()
    lora_dir = svc.run.server.lora_dir
    if not lora_dir:
        return {"object": "list", "data": []}
    loaded = set(svc.engine.loaded_loras()) if svc.ready.is_set() and svc.engine is not None else set()
    data = [{"name": name, "object": "lora", "file_size": path.stat().st_size, "target_modules": adapter_layers(path),
             "loaded": name in loaded} for name, path in lora_files(lora_dir)]
    return {"object": "list", "data": data}


@bp.get("/loras")
def list_loras():
    """The adapters requests may name: name, file size, the layers they target, whether loaded now."""
    return jsonify(_listing())


@bp.get("/list_loras")
def sglang_list_loras():
    """SGLang's name for the same listing."""
    return jsonify(_listing())


def _control(action, done: str):
    from sgld.models.lora import UnknownAdapter

    svc = ready_service()
    try:
        svc.control(action)
    except UnknownAdapter as exc:
        raise APIError(404, str(exc), param="lora_path", code="lora_not_found") from None
    except UserError as exc:
        raise bad("lora_path" if exc.param in (None, "loras") else exc.param, str(exc)) from None
    return jsonify({"success": True, "message": done})


@bp.post("/set_lora")
def set_lora():
    """SGLang's set_lora: the server's default adapters (``lora_path`` under the LoRA dir, ``strength``, ``target``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not body.get("lora_path"):
        raise bad("lora_path", "send JSON {lora_path, lora_nickname, strength, target}; lora_path names an adapter in "
                               "the LoRA dir (a list of them for several)")
    unknown = set(body) - {"lora_path", "lora_nickname", "strength", "target"}
    if unknown:
        raise bad(sorted(unknown)[0], f"unknown field '{sorted(unknown)[0]}'", "unknown_field")

    paths = body["lora_path"] if isinstance(body["lora_path"], list) else [body["lora_path"]]

    def per_path(key: str, default):
        value = default if body.get(key) is None else body[key]  # JSON null: the default
        return value if isinstance(value, list) else [value] * len(paths)

    strengths, targets = per_path("strength", 1.0), per_path("target", "transformer")
    if not len(paths) == len(strengths) == len(targets):
        raise bad("strength", "give one strength and target per lora_path")
    loras = [{"name": p, "scale": s, "target": t} for p, s, t in zip(paths, strengths, targets)]
    return _control(lambda engine: engine.set_default_loras(loras), f"default adapters: {', '.join(map(str, paths))}")


@bp.post("/merge_lora_weights")
def merge_lora_weights():
    """Fuse the active adapters into the weights (no per-step cost)."""
    return _control(lambda engine: engine.set_lora_merged(True), "adapters merged into the weights")


@bp.post("/unmerge_lora_weights")
def unmerge_lora_weights():
    """Unfuse them (the stored weights come back exactly); they stay active as separate layers."""
    return _control(lambda engine: engine.set_lora_merged(False), "adapters unmerged")
