"""``python -m server model=tiny_wan server.port=30010``: the Hydra door to the server."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from sgld.config.compose import CONF_DIR, finalize
from sgld.config.schema import register_schema
from sgld.errors import UserError

register_schema()
log = logging.getLogger("sgld.server")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Compose, validate, serve."""
    from server.main import serve

    try:
        run = finalize(cfg)
    except UserError as exc:
        log.error("error: %s", exc)
        sys.exit(2)
    serve(run)


if __name__ == "__main__":
    from sgld.fast_exit import run_and_exit

    run_and_exit(main)
