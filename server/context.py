"""Access to the app's long-lived objects (kept in ``app.extensions``, not per-request ``g``)."""

from __future__ import annotations

from flask import current_app

from server.errors import APIError
from server.jobs import JobService


def service() -> JobService:
    """The app's job service."""
    return current_app.extensions["sgld"]


def ready_service() -> JobService:
    """The job service once its model is loaded; 503 (with Retry-After) before that."""
    svc = service()
    if svc.ready.is_set():
        return svc
    if svc.load_error:
        raise APIError(503, f"the model failed to load: {svc.load_error}", code="model_unavailable")
    raise APIError(503, "the model is still loading; retry shortly", code="model_loading", headers={"Retry-After": "5"})


def check_model(requested, svc: JobService) -> None:
    """A request may name the loaded model (by path or config name) or none; anything else is a 400."""
    if requested in (None, ""):
        return
    if requested not in (svc.model_id, svc.run.model.name):
        raise APIError(
            400, f"model {requested!r} is not served here; this server serves {svc.model_id!r}",
            param="model", code="model_not_found",
        )
