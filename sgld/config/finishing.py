"""Finishing settings no model can run (SGLang's bounds), refused with the key."""

from __future__ import annotations

from sgld.config.schema import RunConfig
from sgld.errors import ConfigError

EXP_RANGE = (1, 4)
SCALE_RANGE = (0.25, 4.0)
MAX_UPSCALING = 8


def check_finishing(run: RunConfig) -> None:
    """Raise ConfigError for an interpolation exponent, flow scale or upscaling factor out of SGLang's bounds."""
    f = run.finishing
    if not EXP_RANGE[0] <= f.frame_interpolation_exp <= EXP_RANGE[1]:
        raise ConfigError(f"finishing.frame_interpolation_exp must be in [{EXP_RANGE[0]}, {EXP_RANGE[1]}] (2x to 16x the "
                          f"frames), got {f.frame_interpolation_exp}", param="finishing.frame_interpolation_exp")
    if not SCALE_RANGE[0] <= f.frame_interpolation_scale <= SCALE_RANGE[1]:
        raise ConfigError(f"finishing.frame_interpolation_scale must be in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}], got "
                          f"{f.frame_interpolation_scale}", param="finishing.frame_interpolation_scale")
    if not 1 <= f.upscaling_scale <= MAX_UPSCALING:
        raise ConfigError(f"finishing.upscaling_scale must be in [1, {MAX_UPSCALING}], got {f.upscaling_scale}",
                          param="finishing.upscaling_scale")
