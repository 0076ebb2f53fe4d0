"""sgld's log level: its own loggers (``sgld``, ``sgld.server``, ``sgld.*``) at the level asked, every other
library's at warning and above (their info lines are not sgld's to show)."""

from __future__ import annotations

import logging


def configure_logging(level: str = "info") -> None:
    """Log sgld's messages at ``level`` (debug, info, warning, error, critical) as plain lines."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s")
    root.setLevel(logging.WARNING)
    logging.getLogger("sgld").setLevel(str(level).upper())
