"""LoRA adapters on a server: sgld's ``GET /v1/loras`` and SGLang's ``/v1/set_lora``, ``/v1/merge_lora_weights``,
``/v1/unmerge_lora_weights`` and ``/v1/list_loras``, with SGLang's semantics.

``set_lora`` makes adapters, by nickname, the ones requests without ``loras`` run with: a new
nickname is loaded from its ``lora_path`` (inside ``--lora-dir`` when the server has one; else a
local ``.safetensors`` file or folder, or a Hugging Face repo id); a known nickname alone
re-activates it. ``unmerge_lora_weights`` turns the adapters off (the base weights, exactly) and
``merge_lora_weights`` back on, as SGLang does. Replies carry SGLang's ``status: ok``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from sgld.errors import UserError

from server.context import ready_service, service
from server.errors import APIError
from server.schemas import Fields, bad
from server.sglang_fields import Endpoint

bp = Blueprint("loras", __name__, url_prefix="/v1")

SET_LORA = Endpoint(frozenset({"lora_nickname", "lora_path", "target", "strength", "merge_mode"}),
                    frozenset({"lora_alpha"}), frozenset())
MERGE = Endpoint(frozenset({"target", "strength"}), frozenset(), frozenset())
UNMERGE = Endpoint(frozenset({"target"}), frozenset(), frozenset())


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
    """SGLang's listing (``loaded_adapters`` by nickname, and per DiT the ``active`` ones), beside sgld's."""
    svc = service()
    state = ready_service().control(lambda engine: engine.lora_control("state")) if svc.ready.is_set() else None
    return jsonify({**(state or {"loaded_adapters": [], "active": {}}), **_listing()})


def _body(endpoint: Endpoint) -> Fields:
    """The request's JSON fields (SGLang's clients may send no body at all: every field then takes its default)."""
    return Fields(request, endpoint, empty_ok=True)


def _as_list(fields: Fields, name: str, default: Any) -> list:
    value = fields.values.get(name)
    return [default] if value is None else value if isinstance(value, list) else [value]


def _control(action: str, message: str, **kwargs: Any):
    from sgld.models.lora import UnknownAdapter

    svc = ready_service()
    try:
        svc.control(lambda engine: engine.lora_control(action, **kwargs))
    except UnknownAdapter as exc:
        raise APIError(404, str(exc), param="lora_nickname" if "nickname" in str(exc) else "lora_path",
                       code="lora_not_found") from None
    except UserError as exc:
        raise bad(exc.param if exc.param in ("target", "lora_nickname", "strength") else "lora_path", str(exc)) from None
    return jsonify({"status": "ok", "success": True, "message": message})


def _targets(fields: Fields) -> list[str]:
    targets = _as_list(fields, "target", "all")
    if not targets or not all(isinstance(t, str) for t in targets):
        raise bad("target", "'target' must be all, transformer, transformer_2 or critic (or a list of them)")
    return targets


def _strength(value: Any, name: str = "strength") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(name, f"'{name}' must be a number, got {value!r}")
    return float(value)


@bp.post("/set_lora")
def set_lora():
    """SGLang's set_lora: ``lora_nickname`` (one or a list), ``lora_path`` (one per nickname; null: a nickname loaded
    before), ``target`` (all, transformer, transformer_2, critic; one, or one per nickname), ``strength``."""
    from sgld.models.lora_control import AdapterRequest

    fields = _body(SET_LORA)
    nicknames = _as_list(fields, "lora_nickname", None)
    if nicknames == [None] or not nicknames or not all(isinstance(n, str) and n.strip() for n in nicknames):
        raise bad("lora_nickname", "'lora_nickname' is required: the adapter's nickname (or a list of them)",
                  "missing_required_parameter")
    paths = _as_list(fields, "lora_path", None)
    if len(paths) == 1 and len(nicknames) > 1 and paths[0] is None:
        paths = paths * len(nicknames)
    strengths = [_strength(s) for s in _as_list(fields, "strength", 1.0)]
    targets = _targets(fields)
    if len(paths) != len(nicknames) or len(strengths) not in (1, len(nicknames)):
        raise bad("lora_path", "give one lora_path (or null) and one strength per lora_nickname")
    strengths = strengths * len(nicknames) if len(strengths) == 1 else strengths
    # One target for all, one per nickname, or, for one nickname, the DiTs it goes into.
    per_nickname = [[t] for t in targets] if len(targets) == len(nicknames) > 1 else [targets] * len(nicknames)
    fields.choice("merge_mode", ("auto", "merge", "dynamic"), "auto")  # how sgld runs them is the run's setting
    requests = [AdapterRequest(n, p, s, tuple(t)) for n, p, s, t in zip(nicknames, paths, strengths, per_nickname)]
    shown = ", ".join(nicknames)
    return _control("set", f"Successfully set LoRA adapter(s): {shown} (target: {', '.join(targets)}, strength: "
                           f"{', '.join(f'{s:g}' for s in strengths)})", requests=requests)


@bp.post("/merge_lora_weights")
def merge_lora_weights():
    """SGLang's merge: the adapters of ``target`` on again (at ``strength`` when given)."""
    fields = _body(MERGE)
    targets = _targets(fields)
    strength = None if fields.values.get("strength") is None else _strength(fields.values["strength"])
    shown = "" if strength is None else f", strength: {strength:g}"
    return _control("switch", f"Successfully merged LoRA weights (target: {', '.join(targets)}{shown})",
                    targets=targets, on=True, strength=strength)


@bp.post("/unmerge_lora_weights")
def unmerge_lora_weights():
    """SGLang's unmerge: the adapters of ``target`` off (the base weights, exactly) until merged again."""
    targets = _targets(_body(UNMERGE))
    return _control("switch", f"Successfully unmerged LoRA weights (target: {', '.join(targets)})", targets=targets,
                    on=False)
