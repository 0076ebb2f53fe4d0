"""Start the server with Waitress: ``sgl-diffusion serve`` and ``python -m server`` both land here."""

from __future__ import annotations

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
    finishes within ``server.drain_s`` or goes back to the queue, then the process exits (status 0).
    """
    import waitress
    from waitress import wasyncore
    from waitress.trigger import trigger

    from sgld.logs import configure_logging

    from server import create_app
    from server.warmup import compile_for_serving

    from server.threads import apply_thread_budget

    configure_logging(run.log_level)  # the Hydra door too (the CLI has set it already)
    start = time.perf_counter()
    apply_thread_budget(run)
    run = compile_for_serving(run)
    app = create_app(run, load=load)
    svc = app.extensions["sgld"]
    host, port = run.server.host, run.server.port
    log.info("sgld serving %s on http://%s:%d (outputs in %s)", run.model.path, host, port, run.output.path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines%s", host, "" if run.server.api_key else " WITHOUT an API key")

    # Waitress's loop runs while its socket map holds a socket. The drain ends it by closing them all, from inside
    # the loop (wasyncore is not thread-safe) through a trigger, not with SIGINT: a server a shell started in the
    # background ignores SIGINT (inherited SIG_IGN), and _thread.interrupt_main() then does nothing.
    sockets: dict = {}
    # Reading ahead on a connection is how waitress notices a client that went away while its request runs
    # (environ["waitress.client_disconnected"]): an abandoned image request cancels its job.
    server = waitress.create_server(app, map=sockets, host=host, port=port, threads=run.server.threads, ident="sgld",
                                    channel_request_lookahead=1)
    wake = trigger(sockets)

    def drain_then_exit() -> None:
        try:
            svc.drain(run.server.drain_s)
        finally:
            try:
                wake.pull_trigger(lambda: wasyncore.close_all(sockets))
            except OSError:  # the loop has already ended (Ctrl-C) and closed the trigger
                pass

    def on_sigterm(signum, frame) -> None:
        if not svc.draining:
            log.info("SIGTERM: draining (up to %.0f s for the running job)", run.server.drain_s)
            threading.Thread(target=drain_then_exit, name="sgld-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    # Through sgld's logger: waitress's own (print_listen) logs at INFO on a logger nobody configured, so it was lost.
    log.info("Serving on http://%s:%s", server.effective_host, server.effective_port)
    try:
        server.run()  # returns after the drain closed the sockets, or on Ctrl-C (KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        server.task_dispatcher.shutdown()  # request threads still answering get a few seconds
        svc.stop()
        log.info("server stopped after %.0f s", time.perf_counter() - start)
