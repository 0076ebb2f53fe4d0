"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}, "detail": message}`` with the right status.

``detail`` repeats the message where SGLang's (FastAPI's) clients read it; OpenAI's SDK reads ``error``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import sqlalchemy.exc
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("sgld.server")

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error answered to the client as OpenAI does."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict] = None, extra: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param, "code": code},
            "detail": message}


def _respond(exc: APIError):
    body = error_body(exc.status, exc.message, exc.param, exc.code)
    body.update(exc.extra)
    response = jsonify(body)
    response.status_code = exc.status
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
              400: "invalid_request"}


def register_error_handlers(app: Flask) -> None:
    """Every error the app can raise leaves as an OpenAI error body."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError):
        return _respond(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the server's limit of {limit // (1024 * 1024)} MB" if limit else message
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return _respond(APIError(status, message, code=HTTP_CODES.get(status), headers=headers))

    @app.errorhandler(sqlalchemy.exc.DBAPIError)
    def _store_unavailable(exc: Exception):
        # The job store (PostgreSQL) is down or unreachable: a 503 to retry, not a 500; never its URL.
        log.warning("job store error: %s", type(getattr(exc, "orig", exc)).__name__)
        return _respond(APIError(503, "the job store is unreachable; retry shortly", code="store_unavailable",
                                 headers={"Retry-After": "5"}))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from server.request_ids import current_request_id

        log.exception("unhandled error (request_id=%s)", current_request_id())
        return _respond(APIError(500, "internal server error", code="internal_error"))
