"""``/health``, ``/v1/models``, ``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.context import service
from server.errors import APIError
from server.openapi import openapi_spec

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health():
    """200 once the model is loaded; 503 while loading or after a failed load."""
    svc = service()
    if svc.ready.is_set():
        return jsonify({"status": "ok", "model": svc.model_id, "queued": len(svc.queue)})
    if svc.load_error:
        response = jsonify({"status": "error", "model": svc.model_id, "message": svc.load_error})
    else:
        response = jsonify({"status": "loading", "model": svc.model_id})
    response.status_code = 503
    return response


def model_object(svc) -> dict:
    """OpenAI's model object, with what SGLang's clients read: the path, task type, GPUs and precisions."""
    run = svc.run
    created = svc.store.path.stat().st_mtime if svc.store.path.exists() else 0
    return {
        "id": svc.model_id, "object": "model", "created": int(created), "owned_by": "sgld",
        "root": run.model.path, "task_type": svc.folder_model.spec.task, "num_gpus": run.parallel.num_gpus,
        "dit_precision": run.model.precision, "vae_precision": run.vae.precision,
    }


@bp.get("/v1/models")
def list_models():
    """The one model this server serves."""
    return jsonify({"object": "list", "data": [model_object(service())]})


@bp.get("/v1/models/<path:model>")
def retrieve_model(model: str):
    """The served model's object (by its path or config name); 404 ``model_not_found`` for any other id."""
    svc = service()
    if model not in (svc.model_id, svc.run.model.name):
        raise APIError(404, f"model {model!r} is not served here; this server serves {svc.model_id!r}",
                       param="model", code="model_not_found")
    return jsonify(model_object(svc))


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    svc = service()
    m = current_app.extensions["sgld_metrics"]
    m.queue_depth.set(len(svc.queue))
    for status, count in svc.store.count_by_status().items():
        m.jobs.labels(status=status).set(count)
    return Response(generate_latest(m.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of every endpoint."""
    svc = service()
    model = svc.folder_model
    return jsonify(openapi_spec(svc.run.server, model.spec, bool(svc.run.server.api_key)))
