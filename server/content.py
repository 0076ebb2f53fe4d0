"""Looking jobs up by id and serving their files: one path for videos and images (same key, same retention)."""

from __future__ import annotations

from flask import send_file

from server.context import service
from server.errors import APIError
from server.schemas import bad
from server.store import Job

MIMETYPES = {".mp4": "video/mp4", ".webp": "image/webp", ".png": "image/png", ".jpeg": "image/jpeg"}


def get_job(kind: str, job_id: str) -> Job:
    """The ``kind`` job ``job_id``; 404 ``<kind>_not_found`` for any other id."""
    job = service().store.get(job_id)
    if job is None or job.kind != kind:
        raise APIError(404, f"no {kind} with id {job_id!r}", param=f"{kind}_id", code=f"{kind}_not_found")
    return job


def variant_index(value: str, count: int) -> int:
    """``?variant=N``: which of a job's ``count`` outputs (0-based); 400 naming ``variant`` otherwise."""
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < count:
        raise bad("variant", f"'variant' must be an output index from 0 to {count - 1}, got {value!r}")
    return index


def send_output(job: Job, name: str, what: str):
    """The file ``name`` of a completed job; 404 once expired or gone, 409 before it completes."""
    kind = job.kind
    if job.status == "expired":
        raise APIError(404, f"{kind} {job.id} expired at {job.expires_at}; its files were removed",
                       param=f"{kind}_id", code=f"{kind}_expired")
    if job.status != "completed":
        raise APIError(409, f"{kind} {job.id} is {job.status}; its content is available once it is completed",
                       param=f"{kind}_id", code=f"{kind}_not_ready")
    try:
        stream = service().output_file(job, name)
    except FileNotFoundError:
        raise APIError(404, f"the {what} of {kind} {job.id} is no longer stored", code="content_missing") from None
    mimetype = MIMETYPES[name[name.rfind("."):]]
    return send_file(stream, mimetype=mimetype, download_name=name, max_age=0)
