"""Stand-in for SGLang's runtime utils: the one helper the harness imports (the real module imports torch)."""

import os


def get_bool_env_var(name: str, default: str = "false") -> bool:
    """Whether the environment variable ``name`` is set to a true value."""
    return str(os.getenv(name, default)).strip().lower() in {"1", "true", "yes", "y", "t", "on"}
