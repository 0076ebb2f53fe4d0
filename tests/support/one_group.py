"""Several parallel generations on one launch of the ranks: each run builds its own mesh in the same process group.

A launch costs more than a tiny generation (the elastic agent, spawned ranks importing torch and diffusers): the
layout tests hand their runs here together and get each run's rank-0 outputs back, in order. The launch is sgld's
own (``launch`` and ``run_as_rank``: the group joined once, left once); each run is loaded and generated as
``run_generation`` does on a rank (``runner.run_local`` with the rank's state, built by ``init_distributed`` for
that run's layout). Module-level, so spawned ranks can import it by name.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from sgld.config.schema import RunConfig
from sgld.parallel.state import ParallelState


class RankRun(NamedTuple):
    """Rank 0's outputs of one run: frames, sound (None for a silent model) and the step cache's report."""

    frames: Any
    audio: Any
    step_cache: Optional[dict]


def generate_on_one_group(options: list[dict]) -> list[RankRun]:
    """Rank 0's outputs of each generate-options dict, all run on one launch of ``num_gpus`` ranks."""
    from sgld.run_config import run_config_from_options
    from sgld.runner import check_generate_run

    runs = [run_config_from_options({**o, "save_output": False, "return_frames": True}) for o in options]
    for run in runs:
        check_generate_run(run)
    return each_on_one_group(runs, generate)


def each_on_one_group(runs: list[RunConfig], body: Callable[[RunConfig, ParallelState], Any]) -> list[Any]:
    """Rank 0's ``body(run, state)`` of each run, all on one launch of ``num_gpus`` ranks (``body`` module-level,
    so spawned ranks can unpickle it)."""
    from sgld.parallel.launch import launch
    from sgld.runner import check_before_loading

    sizes = {run.parallel.num_gpus for run in runs}
    assert len(sizes) == 1 and sizes != {1}, f"one group runs one number of ranks (>1), not {sorted(sizes)}"
    for run in runs:  # as the CLI does before a launch: a tiny model is built here, once, not by each rank
        check_before_loading(run)
    return launch(runs[0], EachRun(runs, body))


def generate(run: RunConfig, state: ParallelState) -> RankRun:
    """One run loaded and generated as ``run_generation`` does on a rank."""
    from sgld.runner import run_local

    result = run_local(run, state)
    return RankRun(result.frames, result.audio, result.step_cache)


class EachRun:
    """A rank body (``launch``'s, picklable for the spawned ranks) that runs ``body`` on every run in turn."""

    def __init__(self, runs: list[RunConfig], body: Callable[[RunConfig, ParallelState], Any]):
        self.runs, self.body = runs, body

    def __call__(self, first: RunConfig, state: ParallelState) -> list[Any]:
        """``first`` is ``runs[0]`` (the run ``launch`` was given), ``state`` its mesh; the later runs build theirs."""
        from sgld.parallel.state import init_distributed

        return [self.body(run, state if index == 0 else init_distributed(run)) for index, run in enumerate(self.runs)]
