"""Errors that are the user's to fix: shown as one clear message, never a traceback."""


class UserError(ValueError):
    """Bad input (flag, config key, request field, model path). The message names the value."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ConfigError(UserError):
    """A composed run config that cannot run (bad key, type, or impossible combination)."""


class GenerationStopped(Exception):
    """A generation was stopped between denoise steps because its ``stop_check`` said so (every rank stops)."""
