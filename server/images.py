"""``/v1/images/generations`` and ``/v1/images/edits``: synchronous for the client, queued like videos."""

from __future__ import annotations

import base64
import time

from flask import Blueprint, jsonify, request

from sgld.checks import input_images_taken
from sgld.config.schema import RunConfig
from sgld.families import OutputKind

from server.context import accepting_service, check_model, queue_full
from server.errors import APIError
from server.jobs import QueueFull, engine_options, new_id
from server.request_ids import current_request_id
from server.schemas import MAX_SEED, Fields, bad, check_with_engine, parse_common, parse_loras, read_image_upload

bp = Blueprint("images", __name__, url_prefix="/v1/images")

COMMON = {"prompt", "model", "n", "size", "response_format", "output_format", "seed", "negative_prompt",
          "num_inference_steps", "guidance_scale", "user", "loras"}
URL_DETAIL = "response_format=url is not supported"


def _parse(fields: Fields, svc, *, edit: bool) -> tuple[str, dict, str]:
    limits = svc.run.server
    if fields.choice("response_format", ("b64_json", "url"), "b64_json") == "url":
        raise APIError(400, URL_DETAIL, param="response_format", code="unsupported_value", extra={"detail": URL_DETAIL})
    prompt = fields.text("prompt", required=True, max_chars=limits.max_prompt_chars, allow_empty=False)
    check_model(fields.values.get("model"), svc)
    spec = svc.engine.pipeline.spec
    if spec.output != OutputKind.image:
        raise APIError(400, f"{svc.model_id!r} makes videos; use /v1/videos", param="model", code="wrong_endpoint")
    if spec.needs_image and not edit:
        raise APIError(400, f"{svc.model_id!r} edits images; use /v1/images/edits", param="model", code="wrong_endpoint")
    if edit and not spec.takes_image:
        raise APIError(400, f"{svc.model_id!r} does not edit images; use /v1/images/generations", param="model", code="wrong_endpoint")
    options: dict = {
        "prompt": prompt,
        **parse_common(fields, limits, max_seed=MAX_SEED - limits.max_images, size_auto=True),
        "n": fields.integer("n", 1, limits.max_images) or 1,
        "output_format": fields.choice("output_format", ("png", "jpeg", "webp"), "png"),
    }
    loras = parse_loras(fields, limits)
    if loras is not None:
        options["loras"] = loras
    return prompt, options, ""


def _check(svc, options: dict) -> tuple[RunConfig, str]:
    """The request's RunConfig as the engine checked it, and its size for the job record."""
    run = check_with_engine(svc.engine, engine_options(options))
    if run.sampling.width is None or run.sampling.height is None:
        return run, "auto"  # edit models: the output follows the input image
    return run, f"{run.sampling.width}x{run.sampling.height}"


def _run_sync(svc, job_id: str, prompt: str, options: dict, checked: tuple[RunConfig, str]):
    run, size = checked
    try:
        svc.submit("image", prompt, options, size, None, job_id=job_id, request_id=current_request_id(), run=run)
    except QueueFull:
        raise queue_full(svc) from None
    job = svc.wait(job_id, svc.run.server.image_timeout_s)
    if job is None:
        raise APIError(500, "the image job vanished before it finished", code="job_lost")
    if job.status == "failed":
        status = 400 if job.error_code == "invalid_request" else 500
        raise APIError(status, job.error_message or "generation failed", code=job.error_code)
    if job.status != "completed":
        raise APIError(503, f"the image is not ready after {svc.run.server.image_timeout_s:g} s; job {job.id} is {job.status}",
                       code="timeout")
    data = []
    for name in job.outputs:
        with svc.output_file(job, name) as stream:
            data.append({"b64_json": base64.b64encode(stream.read()).decode("ascii")})
    return jsonify({"created": int(time.time()), "data": data})


@bp.post("/generations")
def generate_images():
    """Text to image."""
    svc = accepting_service()
    fields = Fields(request, COMMON)
    prompt, options, _ = _parse(fields, svc, edit=False)
    return _run_sync(svc, new_id("image"), prompt, options, _check(svc, options))


@bp.post("/edits")
def edit_images():
    """Image (plus text) to image: multipart with ``image`` or ``image[]`` (several for Qwen-Image-Edit-Plus; FLUX.2's
    reference images)."""
    svc = accepting_service()
    fields = Fields(request, COMMON | {"mask"}, {"image", "image[]", "mask"})
    prompt, options, _ = _parse(fields, svc, edit=True)
    uploads = fields.files.get("image", []) + fields.files.get("image[]", [])
    if not uploads:
        raise bad("image", "an input image is required (multipart field 'image' or 'image[]')", "missing_required_parameter")
    most = svc.engine.pipeline.spec.max_input_images
    if len(uploads) > most:
        raise bad("image", f"{len(uploads)} images given; {svc.model_id!r} takes {input_images_taken(most)}")
    if fields.files.get("mask") or fields.has("mask"):
        raise bad("mask", f"{svc.model_id!r} does not support masks")
    images = [read_image_upload(upload, "image", svc.run.server.max_pixels) for upload in uploads]
    job_id = new_id("image")
    # Kept until the job ends (a restart runs it again); the worker removes them.
    paths = [svc.files_dir / (f"{job_id}_input.png" if len(images) == 1 else f"{job_id}_input{i}.png")
             for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path, format="PNG")
    options["image_path"] = str(paths[0]) if len(paths) == 1 else [str(path) for path in paths]
    try:
        checked = _check(svc, options)
    except APIError:
        for path in paths:
            path.unlink(missing_ok=True)
        raise
    shared = svc.share_inputs(paths)  # checked here; the job reads them where every replica can
    options["image_path"] = shared[0] if len(shared) == 1 else shared
    return _run_sync(svc, job_id, prompt, options, checked)
