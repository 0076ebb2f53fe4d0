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
    """200 once the model is loaded and the job store answers; 503 while loading, after a failed load, while
    the store is unreachable (it recovers when the store is back) and while draining for a stop."""
    svc = service()
    try:
        queued = svc.queued()
    except Exception as exc:  # noqa: BLE001 - the store's driver error, summarised (never its URL)
        response = jsonify({"status": "error", "model": svc.model_id,
                            "message": f"the job store is unreachable ({type(getattr(exc, 'orig', exc)).__name__})"})
        response.status_code = 503
        return response
    if svc.ready.is_set() and svc.draining:
        response = jsonify({"status": "draining", "model": svc.model_id, "queued": queued})
        response.status_code = 503
        return response
    if svc.ready.is_set():
        body = {"status": "ok", "model": svc.model_id, "queued": queued, "replica": svc.replica_id,
                "startup": svc.startup}
        if len(svc.workers) > 1:  # data-parallel engine workers: a dead one is named while the others serve
            body["workers"] = svc.worker_states()
        return jsonify(body)
    if svc.load_error:
        response = jsonify({"status": "error", "model": svc.model_id, "message": svc.load_error})
    else:
        response = jsonify({"status": "loading", "model": svc.model_id})
    response.status_code = 503
    return response


def served_name(svc) -> str:
    """The model's id on the API: ``--served-model-name``, else the model path."""
    return svc.run.server.served_model_name or svc.model_id


def model_object(svc) -> dict:
    """OpenAI's model object, with what SGLang's clients read (its DiffusionModelCard): the task types, GPUs,
    precisions and pipeline."""
    run, spec = svc.run, svc.folder_model.spec
    name = served_name(svc)
    return {
        "id": name, "object": "model", "created": int(svc.started_at), "owned_by": "sgld",
        "root": name, "task_type": spec.task, "supported_task_types": list(spec.supported_task_types),
        "num_gpus": run.parallel.num_gpus, "dit_precision": run.model.precision, "vae_precision": run.vae.precision,
        "pipeline_name": spec.reference_pipeline, "pipeline_class": spec.reference_pipeline,
    }


@bp.get("/v1/models")
def list_models():
    """The models the service's live replicas serve: this one's first, then the others' (a shared store)."""
    svc = service()
    data = [model_object(svc)]
    for model in svc.served_models():
        if model not in (svc.model_id, served_name(svc)):
            data.append({"id": model, "object": "model", "created": 0, "owned_by": "sgld", "root": model})
    return jsonify({"object": "list", "data": data})


@bp.get("/v1/models/<path:model>")
def retrieve_model(model: str):
    """The served model's object (by its served name, path or config name); 404 ``model_not_found`` for any other."""
    svc = service()
    if model not in (served_name(svc), svc.model_id, svc.run.model.name):
        raise APIError(404, f"model {model!r} is not served here; this server serves {served_name(svc)!r}",
                       param="model", code="model_not_found")
    return jsonify(model_object(svc))


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    svc = service()
    m = current_app.extensions["sgld_metrics"]
    try:
        m.queue_depth.set(svc.queued())
        for status, count in svc.store.count_by_status().items():
            m.jobs.labels(status=status).set(count)
        m.workers.set(len(svc.store.live_replicas(svc.run.server.lease_s)))
        m.store_up.set(1)
    except Exception:  # noqa: BLE001 - the store is down: the other metrics still answer
        m.store_up.set(0)
    m.output_bytes.set(svc.output_bytes())
    return Response(generate_latest(m.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of every endpoint."""
    svc = service()
    model = svc.folder_model
    return jsonify(openapi_spec(svc.run.server, model.spec, bool(svc.run.server.api_key)))
