"""SGLang-style options (CLI flags, --config keys, Python kwargs) -> one validated RunConfig.

Above both sgld.config (composition) and sgld.models (which conf/model file a model path selects).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sgld.config.compose import compose_config, finalize
from sgld.config.options import options_to_values
from sgld.config.schema import RunConfig
from sgld.models.registry import choose_model


def run_config_from_options(options: Mapping[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig for SGLang-style options (CLI flags, --config keys, Python kwargs).

    ``model_path`` selects the ``conf/model`` file (see sgld.models.registry.choose_model);
    every other option sets its one config key on top of the composed defaults.
    """
    groups = list(overrides)
    values: dict[str, Any] = {}
    model_path = options.get("model_path")
    if model_path:
        choice = choose_model(str(model_path), download=bool(options.get("download", True)))
        groups.insert(0, f"model={choice.group}")
        values.update(choice.values)
    values.update(options_to_values(options))
    return finalize(compose_config(groups, values))
