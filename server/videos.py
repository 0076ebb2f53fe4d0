"""``/v1/videos``: create, list, retrieve, delete, download content."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, send_file

from sgld.families import OutputKind

from server.context import accepting_service, check_model, queue_full, service
from server.errors import APIError
from server.jobs import QueueFull, new_id
from server.request_ids import current_request_id
from server.schemas import (
    Fields, ParsedVideo, accepts_query, bad, check_with_engine, nearest_frame_count, parse_common, parse_loras,
    read_image_upload,
    video_object,
)

bp = Blueprint("videos", __name__, url_prefix="/v1/videos")

FIELDS = {"prompt", "model", "size", "seconds", "input_reference", "negative_prompt", "num_inference_steps", "seed",
          "guidance_scale", "fps", "num_frames", "user", "loras"}


def read_input_reference(fields: Fields, svc):
    """The uploaded first frame (PIL) for image-to-video models, None when none is given and none is needed."""
    spec = svc.engine.pipeline.spec
    uploads = fields.files.get("input_reference", [])
    if not spec.takes_image:
        if uploads or fields.has("input_reference"):
            raise bad("input_reference", f"{svc.model_id!r} is a text-to-video model; input_reference needs an "
                                         "image-to-video model")
        return None
    if fields.has("input_reference"):
        raise bad("input_reference", "input_reference must be an uploaded image file (multipart/form-data)")
    if not uploads:
        if spec.needs_image:
            raise bad("input_reference", f"{svc.model_id!r} is an image-to-video model: input_reference (the first "
                                         "frame, an image file) is required", "missing_required_parameter")
        return None
    if len(uploads) > 1:
        raise bad("input_reference", f"{len(uploads)} images given; input_reference takes one")
    return read_image_upload(uploads[0], "input_reference", svc.run.server.max_pixels)


def parse_video_request(fields: Fields, svc, image_path: str | None = None) -> ParsedVideo:
    """Validate a create request against the server's limits and the loaded model.

    ``image_path``: the saved ``input_reference`` upload of an image-to-video request.
    """
    limits = svc.run.server
    prompt = fields.text("prompt", required=True, max_chars=limits.max_prompt_chars, allow_empty=False)
    check_model(fields.values.get("model"), svc)
    engine = svc.engine
    options: dict = {"prompt": prompt, **parse_common(fields, limits)}
    if image_path is not None:
        options["image_path"] = image_path
    fps = fields.integer("fps", 1, 120)
    if fps is not None:
        options["fps"] = fps
    num_frames = fields.integer("num_frames", 1, limits.max_frames)
    seconds = fields.number("seconds", 0, limits.max_video_seconds, exclusive_low=True)
    if num_frames is not None:
        options["num_frames"] = num_frames
    elif seconds is not None:
        # The model's own temporal factor (folder configs or loaded modules: the same size constraints).
        factor = engine.pipeline.constraints.temporal_factor
        frames = nearest_frame_count(seconds, fps or engine.run.sampling.fps, factor)
        if frames > limits.max_frames:
            raise bad("seconds", f"{seconds:g} s is {frames} frames; the server's limit is {limits.max_frames}")
        options["num_frames"] = frames
    renames = {"image_path": "input_reference"}
    if num_frames is None and seconds is not None:
        renames["num_frames"] = "seconds"
    run = check_with_engine(engine, options, renames)
    loras = parse_loras(fields, limits)
    if loras is not None:
        options["loras"] = loras
    s = run.sampling
    return ParsedVideo(prompt, options, f"{s.width}x{s.height}", f"{s.num_frames / s.fps:g}", run)


def _get_job(video_id: str):
    job = service().store.get(video_id)
    if job is None or job.kind != "video":
        raise APIError(404, f"no video with id {video_id!r}", param="video_id", code="video_not_found")
    return job


def _poll_headers(response):
    response.headers["openai-poll-after-ms"] = str(service().run.server.poll_after_ms)
    return response


@bp.post("")
def create_video():
    """Queue a video generation job (image-to-video models: with the ``input_reference`` upload as first frame)."""
    svc = accepting_service()
    fields = Fields(request, FIELDS, {"input_reference"})
    if svc.engine.pipeline.spec.output != OutputKind.video:
        raise APIError(400, f"{svc.model_id!r} makes images; use /v1/images/generations", param="model", code="wrong_endpoint")
    image = read_input_reference(fields, svc)
    job_id = new_id("video")
    path = None
    if image is not None:  # kept until the job ends; the worker removes it
        path = svc.files_dir / f"{job_id}_input.png"
        image.save(path, format="PNG")
    try:
        parsed = parse_video_request(fields, svc, None if path is None else str(path))
        if path is not None:  # checked here; the job reads it where every replica can
            parsed.options["image_path"] = svc.share_inputs([path])[0]
        job = svc.submit("video", parsed.prompt, parsed.options, parsed.size, parsed.seconds, job_id=job_id, run=parsed.run,
                         request_id=current_request_id())
    except QueueFull:
        if path is not None:
            path.unlink(missing_ok=True)
        raise queue_full(svc) from None
    except APIError:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return _poll_headers(jsonify(video_object(job)))


@bp.get("")
@accepts_query("after", "limit", "order")
def list_videos():
    """Jobs, newest first by default, with cursor pagination (``after``, ``limit``, ``order``)."""
    args = request.args
    try:
        limit = int(args.get("limit", 20))
    except ValueError:
        raise bad("limit", f"'limit' must be an integer, got {args.get('limit')!r}") from None
    if not 1 <= limit <= 100:
        raise bad("limit", f"'limit' must be between 1 and 100, got {limit}")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad("order", f"'order' must be asc or desc, got {order!r}")
    try:
        jobs, has_more = service().store.page("video", limit, order, args.get("after"))
    except KeyError:  # a cursor that names no job (deleted, expired from another store): nothing after it
        jobs, has_more = [], False
    data = [video_object(job) for job in jobs]
    return jsonify({
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    })


@bp.get("/<video_id>")
def retrieve_video(video_id: str):
    """One job's current state."""
    return _poll_headers(jsonify(video_object(_get_job(video_id))))


@bp.delete("/<video_id>")
def delete_video(video_id: str):
    """Cancel a queued or running job and delete its record and files."""
    _get_job(video_id)
    service().delete(video_id)
    # OpenAI's deletion object, with SGLang's status of the removed job.
    return jsonify({"id": video_id, "object": "video.deleted", "deleted": True, "status": "deleted"})


@bp.get("/<video_id>/content")
@accepts_query("variant")
def video_content(video_id: str):
    """The MP4 (or ``variant=thumbnail``: a WebP of the first frame) of a completed job."""
    variant = request.args.get("variant", "video")
    if variant not in ("video", "thumbnail"):
        raise bad("variant", f"'variant' must be video or thumbnail, got {variant!r}")
    job = _get_job(video_id)
    if job.status == "expired":
        raise APIError(404, f"video {video_id} expired at {job.expires_at} (the server keeps outputs "
                            f"{service().run.server.retention_s:g} s); its files were removed",
                       param="video_id", code="video_expired")
    if job.status != "completed":
        raise APIError(
            409, f"video {video_id} is {job.status}; its content is available once it is completed",
            param="video_id", code="video_not_ready",
        )
    name = job.outputs[0] if variant == "video" else job.outputs[1]
    try:
        stream = service().output_file(job, name)
    except FileNotFoundError:
        raise APIError(404, f"the {variant} of video {video_id} is no longer stored", code="content_missing") from None
    mimetype = "video/mp4" if variant == "video" else "image/webp"
    return send_file(stream, mimetype=mimetype, download_name=name, max_age=0)
