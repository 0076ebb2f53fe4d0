"""Start a run on N processes with torchrun's elastic launcher, or join the group torchrun started.

The outer process (CLI or Hydra job) calls ``launch``: torch's elastic agent spawns one
worker per rank on this machine (``--standalone`` rendezvous), each worker composes
nothing new: it receives the outer process's validated RunConfig. A rank that fails
exits non-zero, the agent stops the others, and the failing rank's message comes back
as a UserError. Collectives time out after ``parallel.timeout_s``, so a stuck rank
cannot hang the group.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Callable

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.parallel.state import ParallelState

log = logging.getLogger("sgld")

# What a rank runs once it has joined the group: (run, this rank's state) -> its result.
RankBody = Callable[[RunConfig, ParallelState], Any]


def launch(run: RunConfig, body: RankBody) -> Any:
    """Run ``body(run, state)`` on ``parallel.num_gpus`` local processes; returns rank 0's result.

    ``body`` must be importable by name (a module-level function): the ranks are spawned.
    """
    return launch_function(run, rank_main, run, body)[0]


def launch_function(run: RunConfig, function, *args: Any) -> dict:
    """Call ``function(*args)`` on ``parallel.num_gpus`` local ranks; their return values by rank.

    A failing rank's message is raised as a UserError once the agent has stopped the group.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=run.parallel.num_gpus, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        return elastic_launch(config, function)(*args)
    except ChildFailedError as exc:
        raise UserError(_failure_message(exc)) from None


def _failure_message(exc) -> str:
    """The first failing rank's own message (not the launcher's wrapper text)."""
    rank, failure = exc.get_first_failure()
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", json.dumps(message))
    text = [line for line in str(message or f"exit code {failure.exitcode}").strip().splitlines() if line.strip()]
    if not text:
        return f"rank {rank} failed: no message"
    # A traceback ends with the error; an error's own text (dynamo's, several lines of hints) starts with it.
    return f"rank {rank} failed: {text[-1] if text[0].startswith('Traceback') else text[0]}"


def rank_main(run: RunConfig, body: RankBody):
    """One rank's entry point (module-level, so the spawn start method can import it)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(run_as_rank)(run, body)


def quiet_other_ranks(state: ParallelState, level: str = "info") -> None:
    """Only rank 0 logs at the run's level (a spawned rank starts with no logging set up) and shows progress bars;
    the others log warnings and errors."""
    from sgld.logs import configure_logging

    configure_logging(level if state.is_main else "warning")
    if not state.is_main:
        logging.getLogger().setLevel(logging.WARNING)
        os.environ["TQDM_DISABLE"] = "1"


def run_as_rank(run: RunConfig, body: RankBody):
    """Join the process group, run ``body`` together, leave; rank 0's result (None on the others)."""
    from sgld.parallel.state import init_distributed, shutdown

    state = init_distributed(run)
    quiet_other_ranks(state, run.log_level)
    finished = False
    try:
        result = body(run, state)
        finished = True
    except UserError as exc:
        # The message must reach the launcher: raise a plain error that @record writes out.
        raise RuntimeError(str(exc)) from None
    finally:
        shutdown(together=finished)
    return result if state.is_main else None
