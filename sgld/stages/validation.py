"""Input checks for video models, run before any weights are touched."""

from __future__ import annotations

from sgld.errors import UserError
from sgld.request import Request
from sgld.stages.base import Stage


def _nearest_multiples(value: int, multiple: int) -> str:
    low = max(value // multiple * multiple, multiple)
    high = low + multiple if low <= value else low
    return f"{low} or {high}" if low != high else str(low)


def check_video_request(req: Request, spatial_multiple: int, temporal_factor: int) -> None:
    """Raise UserError naming the field when the model cannot produce this size or length."""
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise UserError("prompt must be a non-empty string (--prompt)", param="prompt")
    for field in ("height", "width"):
        value = getattr(req, field)
        if value < spatial_multiple or value % spatial_multiple:
            raise UserError(
                f"{field}={value} must be a multiple of {spatial_multiple} for this model; "
                f"nearest valid: {_nearest_multiples(value, spatial_multiple)}",
                param=field,
            )
    n = req.num_frames
    if n < 1 or (n - 1) % temporal_factor:
        low = max((n - 1) // temporal_factor * temporal_factor + 1, 1)
        high = low + temporal_factor
        raise UserError(
            f"num_frames={n} must be {temporal_factor}k+1 for this model; nearest valid: {low} or {high}",
            param="num_frames",
        )
    if req.num_inference_steps < 1:
        raise UserError(f"num_inference_steps must be >= 1, got {req.num_inference_steps}", param="num_inference_steps")
    if req.guidance_scale < 0:
        raise UserError(f"guidance_scale must be >= 0, got {req.guidance_scale}", param="guidance_scale")


class VideoInputValidationStage(Stage):
    """Checks size, frame count and steps against the model's constraints."""

    name = "validate"

    def __init__(self, spatial_multiple: int, temporal_factor: int):
        self.spatial_multiple = spatial_multiple
        self.temporal_factor = temporal_factor

    def forward(self, req: Request) -> Request:
        check_video_request(req, self.spatial_multiple, self.temporal_factor)
        return req
