"""``python -m sgld.generate``: the Hydra front door (``model=wan22 parallel=usp4 sampling.seed=7``).

Supports Hydra multirun (``-m sampling.seed=1,2,3``): each job writes its output into
its own job directory under ``${output.path}/multirun/...``.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from sgld.config.compose import CONF_DIR, finalize
from sgld.config.schema import register_schema
from sgld.errors import UserError

log = logging.getLogger("sgld")

register_schema()


def run(cfg: DictConfig) -> int:
    """Validate ``cfg`` and generate once; returns the process exit code (2: bad input)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        run_config = finalize(cfg)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            # One output per sweep job, in that job's own directory.
            run_config.output.path = HydraConfig.get().runtime.output_dir
        from sgld.batch import is_prompt_set
        from sgld.runner import run_generation, run_prompt_set

        if is_prompt_set(run_config):
            summary = run_prompt_set(run_config)
            log.info("prompt set: %d of %d outputs, %d failed", summary["done"], summary["total"], summary["failed"])
            return 1 if summary["failed"] else 0
        result = run_generation(run_config)
    except UserError as exc:
        from sgld.config.options import in_config_keys

        log.error("error: %s", in_config_keys(str(exc)))  # this door takes keys, not the flags messages name
        return 2
    if result is not None:  # None: a rank other than 0 under torchrun
        from sgld.runner import describe_timings

        log.info("%s", describe_timings(result))
        if result.path:
            log.info("saved %s", result.path)
    return 0


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: compose, then run."""
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    from sgld.fast_exit import run_and_exit

    run_and_exit(main)
