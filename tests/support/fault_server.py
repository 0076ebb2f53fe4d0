"""``python -m tests.support.fault_server model=... key=value``: the Hydra server door with fault injection.

The same as ``python -m server``, with the engine loaded through ``load_engine_with_faults``: test
prompts fail their job (JOB_FAULT) or kill a rank (RANK_FAULT). Tests start it as a real Waitress
server on 127.0.0.1.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from sgld.config.compose import CONF_DIR, finalize
from sgld.config.schema import register_schema
from sgld.errors import UserError

register_schema()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Compose, validate, serve with the faulty engine."""
    from server.main import serve
    from tests.support.faults import load_engine_with_faults

    try:
        run = finalize(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(run, load=load_engine_with_faults)


if __name__ == "__main__":
    main()
