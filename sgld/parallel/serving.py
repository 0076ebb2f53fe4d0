"""The ranks' side of serving on several processes: rank 0 takes jobs from the server, every rank runs them.

The HTTP server stays in the launching process (``server.rank_group.RankGroupEngine``), so
when a rank dies and torch's elastic agent stops the group, the server survives to fail the
job with the rank's message and report it on ``/health``. Jobs reach rank 0 through a
multiprocessing queue and are broadcast to the other ranks over a gloo control group with
no practical timeout (an idle server waits for work as long as it likes); the data-plane
group keeps ``parallel.timeout_s``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from sgld.config.schema import RunConfig
from sgld.errors import GenerationStopped, UserError

if TYPE_CHECKING:
    from sgld.parallel.state import ParallelState

STOP = ("stop",)
# (CONTROL, action, kwargs): a LoRA control action every rank runs on its generator (``lora_control``).
CONTROL = "control"
# One year: the control group's broadcast is how idle ranks wait for the next job.
_IDLE_WAIT = timedelta(days=365)


# Loads the model on one rank: (run, this rank's state) -> a generator (DiffGenerator.from_run_config).
# Passed in by the server, so this package never imports the API layer.
RankLoader = Callable[[RunConfig, "ParallelState"], Any]


def serve_ranks(run: RunConfig, load: RankLoader, jobs: Any, events: Any, cancel: Any) -> None:
    """Entry point of each rank (module-level for the spawn start method); ``load`` must be importable by name."""
    from torch.distributed.elastic.multiprocessing.errors import record

    record(_serve_as_rank)(run, load, jobs, events, cancel)


def _serve_as_rank(run: RunConfig, load: RankLoader, jobs: Any, events: Any, cancel: Any) -> None:
    import torch.distributed as dist

    from sgld.parallel.launch import quiet_other_ranks
    from sgld.parallel.state import init_distributed, shutdown

    state = init_distributed(run)
    parent = os.getppid()
    quiet_other_ranks(state, run.log_level)
    stopped = False
    try:
        generator = load(run, state)
        control = dist.new_group(backend="gloo", timeout=_IDLE_WAIT)
        dist.barrier(group=control)
        if state.is_main:
            events.put(("ready",))
        while True:
            message = [_next_job(jobs, parent) if state.is_main else None]
            dist.broadcast_object_list(message, src=0, group=control)
            if message[0] == STOP:
                stopped = True  # every rank got it: they leave together
                return
            if isinstance(message[0], tuple) and message[0][0] == CONTROL:
                _control(generator, state, message[0], events)
                continue
            _run_job(generator, state, message[0], events, cancel)
    finally:
        shutdown(together=stopped)
        if os.getppid() != parent:
            # The server was killed: nobody will collect this rank's result, and torch's
            # worker wrapper would wait for that forever. Leave now.
            os._exit(0)


def _next_job(jobs: Any, parent: int) -> Any:
    """Rank 0 waits for a job; if the server process is gone (killed), the group shuts down instead."""
    import queue

    while True:
        try:
            return jobs.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return STOP


def _control(generator, state, message: tuple, events: Any) -> None:
    """Every rank runs a control action (the same checks: the same outcome on each); rank 0 answers."""
    _, action, kwargs = message
    try:
        result = generator.lora_control(action, **kwargs)
    except UserError as exc:
        if state.is_main:
            events.put(("error", str(exc)))
        return
    if state.is_main:
        events.put(("controlled", result))


def _run_job(generator, state, options: dict, events: Any, cancel: Any) -> None:
    """Every rank runs the job; rank 0 reports progress and the result."""
    cancel_flag = cancel.is_set if state.is_main else (lambda: False)
    progress = (lambda done, total: events.put(("progress", done, total))) if state.is_main else None
    try:
        result = generator.generate(step_callback=progress, stop_check=cancel_flag, **options)
    except GenerationStopped:
        if state.is_main:
            events.put(("cancelled",))
        return
    except UserError as exc:
        # Bad input caught by the engine's own checks before any collective: the same on every rank.
        if state.is_main:
            events.put(("error", str(exc)))
        return
    if state.is_main:
        first = result.frames[:1] if result.frames is not None else None
        events.put(("done", str(result.path) if result.path else None, first, dict(result.timings)))
