"""``x-request-id``: the client's id when it sends a usable one, else a new one; on every response and log line."""

from __future__ import annotations

import re
import secrets

from flask import Flask, g, has_request_context, request

HEADER = "X-Request-Id"
# What a client may send as its id (UUIDs, ULIDs, "req_..." and the like); anything else is replaced.
_USABLE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


def install_request_ids(app: Flask) -> None:
    """Give every request an id before any other hook runs, and every response the header."""

    @app.before_request
    def _assign():
        sent = request.headers.get(HEADER, "")
        g.request_id = sent if _USABLE.match(sent) else f"req_{secrets.token_hex(12)}"

    @app.after_request
    def _answer(response):
        response.headers[HEADER] = current_request_id() or f"req_{secrets.token_hex(12)}"
        return response
