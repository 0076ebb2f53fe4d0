"""Access to the app's long-lived objects (kept in ``app.extensions``, not per-request ``g``)."""

from __future__ import annotations

from flask import current_app

from server.errors import APIError
from server.jobs import JobService


def service() -> JobService:
    """The app's job service."""
    return current_app.extensions["sgld"]


def ready_service() -> JobService:
    """The job service once its model is loaded (control actions such as LoRA changes act on loaded engines); 503
    (with Retry-After) before that."""
    svc = service()
    if svc.ready.is_set():
        return svc
    if svc.load_error:
        raise APIError(503, f"the model failed to load: {svc.load_error}", code="model_unavailable")
    raise APIError(503, "the model is still loading; retry shortly", code="model_loading", headers={"Retry-After": "5"})


def generating_service() -> JobService:
    """The job service for a generation request, loaded or loading: one that arrives while the model loads is
    checked against the model folder and queued (an image request then waits for it). Only a failed load is a
    503, with its reason."""
    svc = service()
    if not svc.ready.is_set() and svc.load_error:
        raise APIError(503, f"the model failed to load: {svc.load_error}", code="model_unavailable")
    return svc


def queue_full(svc: JobService) -> APIError:
    """The 429 a create request gets when the queue is at its bound."""
    return APIError(429, f"the queue is full ({svc.run.server.max_queue} jobs waiting); retry later",
                    code="queue_full", headers={"Retry-After": "10"})


def accepting_service() -> JobService:
    """The job service for a generation request (loaded or loading), refusing early (before any parsing) when its
    queue is already full.

    Under load this keeps a refusal cheap; ``JobService.submit`` still enforces the bound exactly.
    """
    svc = generating_service()
    if svc.queued() >= svc.run.server.max_queue:
        raise queue_full(svc)
    return svc


def check_model(requested, svc: JobService) -> None:
    """A request may name this replica's model (by path or config name) or none; anything else is a 400 naming
    the models the service's live replicas serve (send the request to one of those)."""
    if requested in (None, ""):
        return
    if requested not in (svc.model_id, svc.run.model.name):
        served = ", ".join(repr(m) for m in svc.served_models())
        raise APIError(
            400, f"model {requested!r} is not served here; this service serves {served}",
            param="model", code="model_not_found",
        )
