"""Config: the schema, Hydra composition and the SGLang-flag table (no torch imports here)."""

from sgld.config.compose import CONF_DIR, compose_config, finalize, run_config_yaml

__all__ = ["CONF_DIR", "compose_config", "finalize", "run_config_yaml"]
