"""Start the server with Waitress: ``sgl-diffusion serve`` and ``python -m server`` both land here."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from sgld.config.schema import RunConfig

if TYPE_CHECKING:
    from server.engine import EngineLoader

log = logging.getLogger("sgld.server")


def serve(run: RunConfig, load: "Optional[EngineLoader]" = None) -> None:
    """Serve until interrupted; the model loads in the background (with ``load``) while /health says 'loading'."""
    import waitress

    from server import create_app

    start = time.perf_counter()
    app = create_app(run, load=load)
    host, port = run.server.host, run.server.port
    log.info("sgld serving %s on http://%s:%d (outputs and job store in %s)", run.model.path, host, port, run.output.path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines%s", host, "" if run.server.api_key else " WITHOUT an API key")
    try:
        waitress.serve(app, host=host, port=port, threads=run.server.threads, ident="sgld")
    finally:
        app.extensions["sgld"].stop()
        log.info("server stopped after %.0f s", time.perf_counter() - start)
