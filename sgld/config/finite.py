"""The one check that refuses NaN and ±inf: over every float of a run config, or one request value.

A non-finite number passes every range check (``nan < 0`` is False) and then poisons the
latents: a NaN guidance scale writes an all-black image. Every front door composes a RunConfig
and ``validate`` runs ``check_finite`` over it before any weights load; request parsers that see
a single value first (the HTTP server's) call ``finite_number``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from sgld.errors import ConfigError


def finite_number(key: str, value: Any) -> Any:
    """``value`` unchanged, or a ConfigError naming ``key`` when it is a NaN or infinite float."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} is not a finite number", param=key)
    return value


def check_finite(config: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the first float in ``config`` that is NaN or ±inf.

    ``config``: a dataclass (a RunConfig or any part of it), a mapping or a list, walked to every
    leaf; keys are dotted (``sampling.guidance_scale``) and list items indexed (``model.loras[0].scale``).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        for field in dataclasses.fields(config):
            check_finite(getattr(config, field.name), f"{prefix}.{field.name}" if prefix else field.name)
    elif isinstance(config, Mapping):
        for key, value in config.items():
            check_finite(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_finite(value, f"{prefix}[{i}]")
    else:
        finite_number(prefix, config)
