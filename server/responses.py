"""The objects the API answers with for jobs: OpenAI's video and image shapes, with the keys SGLang's clients read.

Content is served by the job's id (``/v1/videos/{id}/content``, ``/v1/images/{id}/content``), with
the same key and retention as the job; a job of several outputs names each with ``?variant=N``.
"""

from __future__ import annotations

from typing import Any, Optional

from server.batching import samples
from server.sound import SILENT
from server.store import Job


def content_url(job: Job, index: int = 0) -> str:
    """Where output ``index`` of a job is downloaded (relative to the server, as SGLang gives it)."""
    url = f"/v1/{job.kind}s/{job.id}/content"
    return url if samples(job) == 1 else f"{url}?variant={index}"


def _error(job: Job) -> Optional[dict]:
    return {"code": job.error_code, "message": job.error_message} if job.status == "failed" else None


def video_object(job: Job, sound: Optional[dict] = None) -> dict[str, Any]:
    """OpenAI's ``video`` object of a job (``model``: the name the request gave), with SGLang's ``url``,
    ``num_outputs``, ``inference_time_s`` and ``peak_memory_mb``, and whether its MP4 has sound
    (``sound``: ``server.sound.sound_fields`` of the model; silent when not given)."""
    done = job.status == "completed"
    count = samples(job)
    body = {
        "id": job.id,
        "object": "video",
        "model": job.requested_model or job.model,
        "status": job.status,
        "progress": job.progress,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,  # None: kept until deleted (server.retention_s unset)
        "size": job.size,
        "seconds": job.seconds,
        "quality": "standard",
        "prompt": job.prompt,
        "error": _error(job),
        "remixed_from_video_id": None,
        "url": content_url(job) if done else None,
        "num_outputs": count,
        "inference_time_s": job.inference_time_s,
        "peak_memory_mb": job.peak_memory_mb,
    }
    if count > 1:
        body["urls"] = [content_url(job, i) for i in range(count)] if done else None
    body.update(sound or SILENT)
    return body


def images_response(job: Job, data: list[dict]) -> dict[str, Any]:
    """The answer to a finished image request: OpenAI's ``{created, data}`` with SGLang's ``id`` (the job's),
    ``inference_time_s`` and ``peak_memory_mb``."""
    return {"id": job.id, "created": job.created_at, "data": data, "inference_time_s": job.inference_time_s,
            "peak_memory_mb": job.peak_memory_mb}


def image_object(job: Job) -> dict[str, Any]:
    """An image job as ``GET /v1/images/{id}`` shows it: its state and, once completed, its outputs' URLs."""
    done = job.status == "completed"
    return {
        "id": job.id,
        "object": "image",
        "model": job.requested_model or job.model,
        "status": job.status,
        "created": job.created_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,
        "size": job.size,
        "prompt": job.prompt,
        "error": _error(job),
        "data": [{"url": content_url(job, i)} for i in range(samples(job))] if done else [],
        "inference_time_s": job.inference_time_s,
        "peak_memory_mb": job.peak_memory_mb,
    }


def deleted_object(job_id: str, kind: str) -> dict[str, Any]:
    """OpenAI's deletion object, with SGLang's status of the removed job."""
    return {"id": job_id, "object": f"{kind}.deleted", "deleted": True, "status": "deleted"}
