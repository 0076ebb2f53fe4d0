"""``/v1/videos``: create, list, retrieve, delete, download content."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from sgld.families import OutputKind

from server.content import get_job, send_output, variant_index
from server.context import accepting_service, check_model, queue_full, service
from server.errors import APIError
from server.jobs import QueueFull, engine_options, new_id
from server.request_ids import current_request_id
from server.responses import deleted_object, video_object
from server.sound import sound_fields
from server.input_images import count_images, named_images, url_image
from server.schemas import (
    Fields, ParsedVideo, accepts_query, bad, check_with_engine, nearest_frame_count, parse_common, parse_loras,
    parse_outputs, read_image_upload,
)
from server.sglang_fields import UNSUPPORTED, VIDEOS

bp = Blueprint("videos", __name__, url_prefix="/v1/videos")

LAST_IMAGE = ("last_image",)  # MiniMax-H3 fl2va's last keyframe (input_reference is the first)
REFERENCE_IMAGES = ("reference_images", "reference_images[]")  # MiniMax-H3 ref2va's references, in order


def read_input_reference(fields: Fields, svc):
    """The first frame (PIL) for image-to-video models: the ``input_reference`` upload, or an image named by URL
    (``reference_url``, or ``input_reference`` as a URL string); None when none is given and none is needed."""
    spec, limits = svc.engine.pipeline.spec, svc.run.server
    if fields.files.get("video_reference"):
        raise APIError(400, f"'video_reference' is not supported yet: sgld has no {UNSUPPORTED['video_url']}",
                       param="video_reference", code="unsupported_feature")
    uploads = fields.files.get("input_reference", [])
    named = [(name, fields.values[name]) for name in ("input_reference", "reference_url") if fields.has(name)]
    if not spec.takes_image:
        if uploads or named:
            param = named[0][0] if named and not uploads else "input_reference"
            raise bad(param, f"{param} is not supported for {spec.task.value} models ({svc.model_id!r} makes video "
                             "from text only)")
        return None
    if len(uploads) + len(named) > 1:
        raise bad("input_reference", "give one first frame: an input_reference upload, or one URL")
    if uploads:
        return read_image_upload(uploads[0], "input_reference", limits.max_pixels)
    if named:
        param, url = named[0]
        if not isinstance(url, str) or not url.strip():
            raise bad(param, f"'{param}' must be an http(s) or data:image URL (or, for input_reference, an uploaded "
                             "image file)")
        return url_image(url.strip(), param, limits)
    if spec.needs_image:
        raise bad("input_reference", f"{svc.model_id!r} is an image-to-video model: input_reference (the first "
                                     "frame: an image file or URL) is required", "missing_required_parameter")
    return None


def read_condition_images(fields: Fields, svc) -> dict[str, list]:
    """MiniMax-H3's other condition images (PIL): the last keyframe (``last_image``) and the reference images
    (``reference_images`` / ``reference_images[]``), each uploaded or named by URL; by the request option each
    becomes (``last_image_path``, ``reference_image``). Counted against what the model takes before any URL is
    fetched."""
    spec = svc.engine.pipeline.spec
    last, references = count_images(fields, LAST_IMAGE), count_images(fields, REFERENCE_IMAGES)
    if last and not spec.takes_last_image:
        raise bad("last_image", f"last_image: {svc.model_id!r} takes no last keyframe (MiniMax-H3 does)")
    if last > 1:
        raise bad("last_image", "give one last keyframe: a last_image upload, or one URL")
    if references > spec.max_reference_images:
        taken = f"at most {spec.max_reference_images}" if spec.max_reference_images else "no"
        raise bad("reference_images", f"reference_images: {references} given; {svc.model_id!r} takes {taken} "
                                      "reference images")
    limits = svc.run.server
    found = {"last_image_path": named_images(fields, LAST_IMAGE, limits),
             "reference_image": named_images(fields, REFERENCE_IMAGES, limits)}
    return {option: [image for _, image in images] for option, images in found.items() if images}


def save_inputs(svc, job_id: str, first, others: dict[str, list]) -> dict[str, list]:
    """Save a request's input images beside its outputs (``<job>_input*``: the worker removes them when the job
    ends); their paths by request option."""
    images = {**({"image_path": [first]} if first is not None else {}), **others}
    suffixes = {"image_path": "", "last_image_path": "_last", "reference_image": "_ref{}"}
    saved = {}
    for option, items in images.items():
        saved[option] = [svc.files_dir / f"{job_id}_input{suffixes[option].format(i)}.png" for i in range(len(items))]
        for image, path in zip(items, saved[option]):
            image.save(path, format="PNG")
    return saved


def as_options(paths: dict[str, list]) -> dict:
    """Saved input paths as request options (a reference list stays a list)."""
    return {option: [str(p) for p in items] if option == "reference_image" else str(items[0])
            for option, items in paths.items()}


def parse_video_request(fields: Fields, svc, inputs: dict | None = None) -> ParsedVideo:
    """Validate a create request against the server's limits and the loaded model.

    ``inputs``: the saved input images by request option (``image_path``: an image-to-video request's first frame).
    """
    limits = svc.run.server
    prompt = fields.text("prompt", required=True, max_chars=limits.max_prompt_chars, allow_empty=False)
    requested = check_model(fields.values.get("model"), svc)
    engine = svc.engine
    n = parse_outputs(fields, limits.max_images)
    options: dict = {"prompt": prompt, **parse_common(fields, limits, engine.pipeline.spec, outputs=n)}
    if n > 1:
        options["n"] = n
    options.update(inputs or {})
    for name in ("guidance_scale_2", "audio_guidance_scale"):
        value = fields.number(name, 0, 100)
        if value is not None:
            options[name] = value
    two_stage = fields.boolean("two_stage")  # LTX-2's recipe (its family and folder say whether it runs)
    if two_stage is not None:
        options["two_stage"] = two_stage
    preset = fields.text("x264_preset", max_chars=16)
    if preset is not None:
        from sgld.config.schema import X264Preset, choices

        options["x264_preset"] = fields.choice("x264_preset", choices(X264Preset), "medium")
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
    renames = {"image_path": "input_reference", "last_image_path": "last_image"}
    if num_frames is None and seconds is not None:
        renames["num_frames"] = "seconds"
    run = check_with_engine(engine, engine_options(options), renames)
    loras = parse_loras(fields, limits)
    if loras is not None:
        options["loras"] = loras
    s = run.sampling
    up = run.finishing.upscaling_scale if run.finishing.enable_upscaling else 1  # the delivered size
    return ParsedVideo(prompt, options, f"{s.width * up}x{s.height * up}", f"{s.num_frames / s.fps:g}", run, requested)


def _sound(svc) -> dict:
    """Whether this server's videos have sound, and its rate (the model folder's, known with or without a running
    engine, so a job stays retrievable after its rank group fails; ``--audio none`` drops it)."""
    return sound_fields(svc.folder_model, svc.run.output.audio)


def _get_job(video_id: str):
    return get_job("video", video_id)


def _poll_headers(response):
    response.headers["openai-poll-after-ms"] = str(service().run.server.poll_after_ms)
    return response


@bp.post("")
def create_video():
    """Queue a video generation job (image-to-video models: with the ``input_reference`` upload as first frame)."""
    svc = accepting_service()
    fields = Fields(request, VIDEOS)
    if svc.engine.pipeline.spec.output != OutputKind.video:
        raise APIError(400, f"{svc.model_id!r} makes images; use /v1/images/generations", param="model", code="wrong_endpoint")
    others = read_condition_images(fields, svc)  # first: a model that takes none refuses them before any fetch
    image = read_input_reference(fields, svc)
    job_id = new_id("video")
    saved = save_inputs(svc, job_id, image, others)  # kept until the job ends; the worker removes them
    try:
        parsed = parse_video_request(fields, svc, as_options(saved))
        # checked here; the job reads them where every replica can
        parsed.options.update(as_options({option: svc.share_inputs(paths) for option, paths in saved.items()}))
        job = svc.submit("video", parsed.prompt, parsed.options, parsed.size, parsed.seconds, job_id=job_id, run=parsed.run,
                         request_id=current_request_id(), requested_model=parsed.requested_model)
    except (QueueFull, APIError) as exc:
        for path in (path for paths in saved.values() for path in paths):
            path.unlink(missing_ok=True)
        if isinstance(exc, QueueFull):
            raise queue_full(svc) from None
        raise
    return _poll_headers(jsonify(video_object(job, _sound(svc))))


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
    sound = _sound(service())
    data = [video_object(job, sound) for job in jobs]
    return jsonify({
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    })


@bp.get("/<video_id>")
def retrieve_video(video_id: str):
    """One job's current state."""
    return _poll_headers(jsonify(video_object(_get_job(video_id), _sound(service()))))


@bp.delete("/<video_id>")
def delete_video(video_id: str):
    """Cancel a queued or running job and delete its record and files."""
    _get_job(video_id)
    service().delete(video_id)
    return jsonify(deleted_object(video_id, "video"))


@bp.get("/<video_id>/content")
@accepts_query("variant")
def video_content(video_id: str):
    """An MP4 of a completed job (``variant=N``: its N-th when it made several; ``video``: the first), or
    ``variant=thumbnail``: a WebP of the first frame."""
    job = _get_job(video_id)
    videos = [name for name in job.outputs if name.endswith(".mp4")]
    variant = request.args.get("variant", "video")
    if variant == "thumbnail":
        name = next((name for name in job.outputs if name.endswith(".webp")), "")
    elif variant == "video":
        name = videos[0] if videos else ""
    elif variant.isdigit():
        name = videos[variant_index(variant, max(1, len(videos)))] if videos else ""
    else:
        raise bad("variant", f"'variant' must be video, thumbnail or an output index, got {variant!r}")
    return send_output(job, name, variant if not variant.isdigit() else f"video {variant}")
