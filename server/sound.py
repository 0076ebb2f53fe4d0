"""What the API says of a model's sound: whether its videos carry an audio track, and at what sample rate."""

from __future__ import annotations

from typing import Any

# A silent model's (and an image model's) answer.
SILENT = {"has_audio": False, "audio_sample_rate": None}


def sound_fields(model: Any, output_audio: str) -> dict:
    """``has_audio`` and ``audio_sample_rate`` of the videos ``model`` (a loaded Pipeline or a FolderModel) makes
    with the server's ``output.audio``: an MP4 with an AAC track unless the model is silent or ``none`` drops it."""
    rate = getattr(model, "sample_rate", None)
    if rate is None or output_audio == "none":
        return dict(SILENT)
    return {"has_audio": True, "audio_sample_rate": int(rate)}
