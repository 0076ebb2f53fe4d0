"""Several parallel generations on one launch of the ranks: each run builds its own mesh in the same process group.

A launch costs more than a tiny generation (the elastic agent, spawned ranks importing torch and diffusers): the
layout tests hand their runs here together and get each run's rank-0 frames and sound back, in order. Each run
is loaded and generated exactly as ``run_generation`` does on a rank (``runner.run_local`` with the rank's state,
built by ``init_distributed`` for that run's layout). Module-level, so spawned ranks can import it by name.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from sgld.config.schema import RunConfig


class RankRun(NamedTuple):
    """Rank 0's outputs of one run: frames, sound (None for a silent model) and the step cache's report."""

    frames: Any
    audio: Any
    step_cache: Optional[dict]


def generate_on_one_group(options: list[dict]) -> list[RankRun]:
    """Rank 0's outputs of each generate-options dict, all run on one launch of ``num_gpus`` ranks."""
    from sgld.parallel.launch import launch_function
    from sgld.run_config import run_config_from_options
    from sgld.runner import check_before_loading, check_generate_run

    runs = [run_config_from_options({**o, "save_output": False, "return_frames": True}) for o in options]
    sizes = {run.parallel.num_gpus for run in runs}
    assert len(sizes) == 1 and sizes != {1}, f"one group runs one number of ranks (>1), not {sorted(sizes)}"
    for run in runs:
        check_generate_run(run)
        check_before_loading(run)
    return launch_function(runs[0], each_on_rank, runs)[0]


def each_on_rank(runs: list[RunConfig]):
    """One rank's entry point: ``record`` writes a failing run's message for the launcher."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_each)(runs)


def _each(runs: list[RunConfig]) -> list[RankRun] | None:
    from sgld.errors import UserError
    from sgld.parallel.launch import quiet_other_ranks
    from sgld.parallel.state import init_distributed, shutdown
    from sgld.runner import run_local

    results, finished, main = [], False, False
    try:
        for index, run in enumerate(runs):
            state = init_distributed(run)
            quiet_other_ranks(state, run.log_level)
            main = state.is_main
            try:
                result = run_local(run, state)
            except UserError as exc:
                raise RuntimeError(f"run {index} ({run.model.path}): {exc}") from None
            results.append(RankRun(result.frames, result.audio, result.step_cache))
        finished = True
    finally:
        shutdown(together=finished)
    return results if main else None
