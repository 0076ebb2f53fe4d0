"""``/v1/images/generations`` and ``/v1/images/edits`` (synchronous for the client, queued like videos), and an image
job by id: ``GET``, ``DELETE`` and its ``/content``.

The request waits for its job; a client that goes away cancels it (between steps, as DELETE does).
Answers carry the job's ``id`` and each image as ``url`` (SGLang's default for generations; served
from ``/v1/images/{id}/content`` with the job's retention) or ``b64_json`` (the default for edits).
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, jsonify, request

from sgld.checks import input_images_taken
from sgld.config.schema import RunConfig
from sgld.families import OutputKind

from server.content import get_job, send_output, variant_index
from server.context import accepting_service, check_model, queue_full, service
from server.errors import APIError
from server.jobs import QueueFull, engine_options, new_id
from server.request_ids import current_request_id
from server.responses import content_url, deleted_object, image_object, images_response
from server.input_images import count_images, named_images
from server.schemas import (
    MAX_SEED, Fields, accepts_query, bad, check_with_engine, parse_common, parse_loras, parse_outputs,
)
from server.sglang_fields import IMAGE_EDITS, IMAGE_GENERATIONS

bp = Blueprint("images", __name__, url_prefix="/v1/images")
log = logging.getLogger("sgld.server")

# ``jpg`` is SGLang's spelling of jpeg; the file keeps one name per format.
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}


def _parse(fields: Fields, svc, *, edit: bool) -> tuple[str, dict, str, str | None]:
    """The request's prompt, job options, response format and the model name it gave."""
    limits = svc.run.server
    response_format = fields.choice("response_format", ("url", "b64_json"), "b64_json" if edit else "url")
    prompt = fields.text("prompt", required=True, max_chars=limits.max_prompt_chars, allow_empty=False)
    requested = check_model(fields.values.get("model"), svc)
    spec = svc.engine.pipeline.spec
    if spec.output != OutputKind.image:
        raise APIError(400, f"{svc.model_id!r} makes videos; use /v1/videos", param="model", code="wrong_endpoint")
    if spec.needs_image and not edit:
        raise APIError(400, f"{svc.model_id!r} edits images; use /v1/images/edits", param="model", code="wrong_endpoint")
    if edit and not spec.takes_image:
        raise APIError(400, f"{svc.model_id!r} does not edit images; use /v1/images/generations", param="model", code="wrong_endpoint")
    if edit:
        fields.integer("num_frames", 1, 1)  # SGLang's edits form sends 1: an edit makes one frame
    n = parse_outputs(fields, limits.max_images)
    output_format = fields.choice("output_format", tuple(FORMATS), "jpeg")  # SGLang's default
    options: dict = {
        "prompt": prompt,
        **parse_common(fields, limits, spec, outputs=n, max_seed=MAX_SEED - limits.max_images, size_auto=True),
        "n": n,
        "output_format": FORMATS[output_format],
    }
    loras = parse_loras(fields, limits)
    if loras is not None:
        options["loras"] = loras
    return prompt, options, response_format, requested


def _check(svc, options: dict) -> tuple[RunConfig, str]:
    """The request's RunConfig as the engine checked it, and its size for the job record."""
    run = check_with_engine(svc.engine, engine_options(options))
    if run.sampling.width is None or run.sampling.height is None:
        return run, "auto"  # edit models: the output follows the input image
    return run, f"{run.sampling.width}x{run.sampling.height}"


def _run_sync(svc, job_id: str, prompt: str, options: dict, checked: tuple[RunConfig, str], response_format: str,
              requested: str | None):
    run, size = checked
    try:
        svc.submit("image", prompt, options, size, None, job_id=job_id, request_id=current_request_id(), run=run,
                   requested_model=requested)
    except QueueFull:
        raise queue_full(svc) from None
    # Waitress tells whether the client is still connected (server/main.py reads ahead on each connection).
    gone = request.environ.get("waitress.client_disconnected")
    job = svc.wait(job_id, svc.run.server.image_timeout_s, gone)
    if job is None and gone is not None and gone():
        log.info("image job %s cancelled: its client went away (request_id=%s)", job_id, current_request_id())
        raise APIError(499, "the client closed the request; its image job was cancelled", code="client_closed_request")
    if job is None:
        raise APIError(500, "the image job vanished before it finished", code="job_lost")
    if job.status == "failed":
        status = 400 if job.error_code == "invalid_request" else 500
        raise APIError(status, job.error_message or "generation failed", code=job.error_code)
    if job.status != "completed":
        raise APIError(503, f"the image is not ready after {svc.run.server.image_timeout_s:g} s; job {job.id} is "
                            f"{job.status} (GET /v1/images/{job.id} follows it)", code="timeout")
    data = []
    for index, name in enumerate(job.outputs):
        if response_format == "url":
            data.append({"url": content_url(job, index), "revised_prompt": job.prompt})
            continue
        with svc.output_file(job, name) as stream:
            data.append({"b64_json": base64.b64encode(stream.read()).decode("ascii"), "revised_prompt": job.prompt})
    return jsonify(images_response(job, data))


@bp.post("/generations")
def generate_images():
    """Text to image."""
    svc = accepting_service()
    fields = Fields(request, IMAGE_GENERATIONS)
    prompt, options, response_format, requested = _parse(fields, svc, edit=False)
    return _run_sync(svc, new_id("image"), prompt, options, _check(svc, options), response_format, requested)


def _input_images(fields: Fields, svc) -> list:
    """The edit's input images (PIL): uploaded as ``image`` / ``image[]``, or named by ``url`` / ``url[]`` (fetched
    under sgld.url_inputs' rules); 400 naming the field for each problem."""
    given = count_images(fields, ("image", "image[]", "url", "url[]"))
    if not given:
        raise bad("image", "an input image is required (multipart field 'image' or 'image[]', or 'url')",
                  "missing_required_parameter")
    most = svc.engine.pipeline.spec.max_input_images
    if given > most:
        raise bad("image", f"{given} images given; {svc.model_id!r} takes {input_images_taken(most)}")
    return [image for _, image in named_images(fields, ("image", "image[]", "url", "url[]"), svc.run.server)]


@bp.post("/edits")
def edit_images():
    """Image (plus text) to image: multipart with ``image`` or ``image[]`` (several for Qwen-Image-Edit-Plus; FLUX.2's
    reference images), or SGLang's ``url`` / ``url[]``."""
    svc = accepting_service()
    fields = Fields(request, IMAGE_EDITS)
    prompt, options, response_format, requested = _parse(fields, svc, edit=True)
    if fields.files.get("mask") or fields.has("mask"):
        raise bad("mask", f"{svc.model_id!r} does not support masks")
    images = _input_images(fields, svc)
    job_id = new_id("image")
    # Kept until the job ends; the worker removes them (with the job if its client goes away).
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
    return _run_sync(svc, job_id, prompt, options, checked, response_format, requested)


@bp.get("/<image_id>")
def retrieve_image(image_id: str):
    """An image job's state; once completed, its images' URLs."""
    return jsonify(image_object(get_job("image", image_id)))


@bp.delete("/<image_id>")
def delete_image(image_id: str):
    """Cancel a queued or running image job (its waiting request gets no image) and delete its record and files."""
    get_job("image", image_id)
    service().delete(image_id)
    return jsonify(deleted_object(image_id, "image"))


@bp.get("/<image_id>/content")
@accepts_query("variant")
def image_content(image_id: str):
    """One image of a completed job (``variant``: its index when the job made several)."""
    job = get_job("image", image_id)
    count = len(job.outputs) or 1
    index = variant_index(request.args["variant"], count) if "variant" in request.args else 0
    name = job.outputs[index] if job.outputs else ""
    return send_output(job, name, "image")
