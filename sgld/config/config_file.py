"""Read a ``--config`` file (JSON or YAML) with the same keys as the CLI options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sgld.config.options import BY_NAME
from sgld.errors import UserError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a JSON/YAML file; a missing file, bad syntax or unknown key is a UserError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"config file {str(path)!r} does not exist", param="config")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"config file {str(path)!r} is not valid JSON: line {exc.lineno}: {exc.msg}", param="config") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"config file {str(path)!r} is not valid YAML: {line}{problem}", param="config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of option: value", param="config")
    for key in data:
        if key not in BY_NAME and key != "vae_config":
            raise UserError(f"unknown key {key!r} in config file {str(path)!r}", param=str(key))
    return data
