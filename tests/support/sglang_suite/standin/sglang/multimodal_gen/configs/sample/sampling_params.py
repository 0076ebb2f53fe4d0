"""Stand-in for SGLang's sampling_params: the quality levels and ``DataType`` the harness imports."""

from sglang.multimodal_gen.configs.task_type import DataType  # noqa: F401 - re-exported as SGLang does

# SGLang 0.5.23's values (configs/sample/sampling_params.py).
QUALITY_LEVELS: tuple[str, ...] = ("exact", "lossless", "high")
QUALITY_ALIASES: dict[str, str] = {"extra-high": "lossless"}


def normalize_quality(quality: str) -> str:
    """The canonical quality level of ``quality`` (aliases resolved), as SGLang's function answers."""
    level = QUALITY_ALIASES.get(quality, quality)
    if level not in QUALITY_LEVELS:
        raise ValueError(f"quality must be one of {[*QUALITY_LEVELS, *QUALITY_ALIASES]}, got {quality!r}")
    return level
