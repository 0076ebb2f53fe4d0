"""sgld: a fast inference engine for diffusion image and video models.

``from sgld import DiffGenerator`` is the Python API; importing ``sgld`` itself stays light
(torch loads only when a generator is made).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DiffGenerator", "GenerationResult", "UserError"]


def __getattr__(name: str) -> Any:
    if name in ("DiffGenerator", "GenerationResult"):
        from sgld import api

        return getattr(api, name)
    if name == "UserError":
        from sgld.errors import UserError

        return UserError
    raise AttributeError(f"module 'sgld' has no attribute {name!r}")
