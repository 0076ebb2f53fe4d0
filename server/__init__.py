"""sgld's OpenAI-compatible HTTP server: a Flask app (served by Waitress) over one engine.

``create_app(run, engine=None)`` builds the app from a composed RunConfig; with no engine
it loads the model named by ``run`` with ``load`` in the background (``/health`` says when it
is ready). Tests enter here: a loaded engine, or a loader that wraps the real one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from flask import Flask, request

from sgld.config.schema import RunConfig

from server.auth import has_api_key

if TYPE_CHECKING:
    from server.engine import Engine, EngineLoader

log = logging.getLogger("sgld.server")

# The playground page and its assets load without a key; the page then sends the key the user types
# (/playground/info answers only whether a key is needed until it gets the key).
PUBLIC_PATHS = {"/health", "/liveness", "/health_generate", "/openapi.json", "/", "/playground", "/playground/app.js",
                "/playground/style.css",
                "/playground/info"}


def create_app(run: RunConfig, engine: Optional["Engine"] = None, service: Optional[Any] = None, start: bool = True,
               load: Optional["EngineLoader"] = None) -> Flask:
    """The Flask app for ``run``. ``engine``: a loaded engine; ``load``: how to load one (default: ``load_engine``);
    ``start``: run the worker."""
    from server import discovery, images, loras, meta, playground, videos
    from server.engine import load_engine
    from server.errors import APIError, register_error_handlers
    from server.jobs import JobService
    from server.metrics import Metrics
    from server.request_ids import current_request_id, install_request_ids
    from server.schemas import check_query
    from server.sglang_fields import add_ignored_header

    app = Flask("sgld-server")
    app.config["MAX_CONTENT_LENGTH"] = run.server.max_body_mb * 1024 * 1024
    app.json.sort_keys = False
    metrics = Metrics()
    svc = service or JobService(run, engine, metrics, load or load_engine)
    app.extensions["sgld"] = svc
    app.extensions["sgld_metrics"] = metrics
    install_request_ids(app)  # first: every later hook, error and log line can name the request
    register_error_handlers(app)
    for blueprint in (videos.bp, images.bp, meta.bp, discovery.bp, playground.bp, loras.bp):
        app.register_blueprint(blueprint)
    app.url_map.strict_slashes = False
    app.after_request(add_ignored_header)  # names the request fields sgld accepted without effect

    api_key = run.server.api_key

    @app.before_request
    def _authenticate():
        if not api_key or request.path in PUBLIC_PATHS:
            return None
        if not has_api_key(request.headers, api_key):
            raise APIError(401, "missing or incorrect API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")
        return None

    @app.before_request
    def _query_params():
        # API endpoints name the query parameters they take; a misspelt one is an error, not ignored.
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if view is not None and request.path.startswith("/v1/"):
            check_query(request.args, getattr(view, "query_params", frozenset()))

    quiet = tuple(run.server.access_log_exclude_prefixes or ())  # paths not logged (health probes, say)

    @app.after_request
    def _count_and_log(response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(method=request.method, route=route, status=str(response.status_code)).inc()
        if not (quiet and request.path.startswith(quiet)):
            log.info("%s %s %d request_id=%s", request.method, request.path, response.status_code, current_request_id())
        return response

    if start:
        svc.start()
    return app
