"""Start the server with Waitress: ``sgl-diffusion serve`` and ``python -m server`` both land here."""

from __future__ import annotations

import _thread
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Optional

from sgld.config.schema import RunConfig

if TYPE_CHECKING:
    from server.engine import EngineLoader

log = logging.getLogger("sgld.server")


def serve(run: RunConfig, load: "Optional[EngineLoader]" = None) -> None:
    """Serve until interrupted; the model loads in the background (with ``load``) while /health says 'loading'.

    SIGTERM drains: the replica stops claiming jobs (``/health`` says ``draining``), its running job
    finishes within ``server.drain_s`` or goes back to the queue, then the process exits.
    """
    import waitress

    from server import create_app
    from server.warmup import compile_for_serving

    start = time.perf_counter()
    run = compile_for_serving(run)
    app = create_app(run, load=load)
    svc = app.extensions["sgld"]
    host, port = run.server.host, run.server.port
    log.info("sgld serving %s on http://%s:%d (outputs in %s)", run.model.path, host, port, run.output.path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines%s", host, "" if run.server.api_key else " WITHOUT an API key")

    def drain_then_exit() -> None:
        svc.drain(run.server.drain_s)
        _thread.interrupt_main()  # waitress's loop ends with KeyboardInterrupt

    def on_sigterm(signum, frame) -> None:
        if not svc.draining:
            log.info("SIGTERM: draining (up to %.0f s for the running job)", run.server.drain_s)
            threading.Thread(target=drain_then_exit, name="sgld-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        waitress.serve(app, host=host, port=port, threads=run.server.threads, ident="sgld")
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        log.info("server stopped after %.0f s", time.perf_counter() - start)
