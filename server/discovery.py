"""SGLang's discovery endpoints, as its clients and model gateway read them: ``/liveness``, ``/health_generate``,
``/server_info``, ``/model_info`` and ``/v1/model_info`` (same keys and values as SGLang's diffusion server)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from sgld import __version__
from sgld.families import OutputKind

from server.context import service
from server.meta import health, served_name

bp = Blueprint("discovery", __name__)


@bp.get("/liveness")
def liveness():
    """200 as soon as the HTTP server answers (loading or not): the process is alive."""
    return jsonify({"status": "ok"})


@bp.get("/health_generate")
def health_generate():
    """SGLang's second health probe: the same answer as ``/health`` (200 once ready, 503 before or on failure)."""
    return health()


@bp.get("/server_info")
def server_info():
    """The serving set-up: model path, served name, tensor- and data-parallel sizes, version."""
    svc = service()
    par = svc.run.parallel
    return jsonify({"model_path": svc.model_id, "served_model_name": served_name(svc), "tp_size": par.tp_size,
                    "dp_size": par.dp_size, "version": f"sgld-{__version__}"})


@bp.get("/model_info")
def model_info():
    """What the model does: SGLang's keys (task type, whether it takes images, what it outputs)."""
    svc = service()
    spec = svc.folder_model.spec
    output = "VIDEO" if spec.output == OutputKind.video else "IMAGE"
    return jsonify({
        "model_path": svc.model_id, "is_generation": True, "model_type": "diffusion",
        "architectures": [spec.reference_pipeline], "has_image_understanding": spec.takes_image,
        "has_audio_understanding": False, "task_type": spec.task, "supported_task_types": list(spec.supported_task_types),
        "output_types": [output], "is_image_gen": spec.output == OutputKind.image,
    })


@bp.get("/v1/model_info")
def v1_model_info():
    """The model path (SGLang's OpenAI-style route)."""
    return jsonify({"model_path": service().model_id})
