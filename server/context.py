"""Access to the app's long-lived objects (kept in ``app.extensions``, not per-request ``g``)."""

from __future__ import annotations

from typing import Optional

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


def check_model(requested, svc: JobService) -> Optional[str]:
    """The model name a request gave, to echo back (None: it gave none).

    A service of one model takes any name (OpenAI SDK code sends ``gpt-image-1``, ``sora-2``), as
    SGLang does. When live replicas of the service serve several models, the name must be this
    replica's (its path, config name or served name); any other is a 400 naming the models served.
    """
    if requested in (None, ""):
        return None
    if not isinstance(requested, str):
        raise APIError(400, "'model' must be a string", param="model", code="invalid_value")
    served = svc.served_models()
    if len(served) <= 1 or requested in own_model_names(svc):
        return requested
    names = ", ".join(repr(m) for m in served)
    raise APIError(400, f"model {requested!r} is not served here; this service serves {names}", param="model",
                   code="model_not_found")


def own_model_names(svc: JobService) -> set[str]:
    """The names this replica's model answers to: its path, its config name and its served name."""
    served_name = svc.run.server.served_model_name
    return {svc.model_id, svc.run.model.name} | ({served_name} if served_name else set())
