"""The input-validation stage: the family's request check, run again as the first stage."""

from __future__ import annotations

from typing import Callable

from sgld.request import Request
from sgld.stages.base import Stage


class InputValidationStage(Stage):
    """Runs the family's request check (the same one used before weights load)."""

    name = "validate"

    def __init__(self, check: Callable[[Request], None]):
        self.check = check

    def forward(self, req: Request) -> Request:
        self.check(req)
        return req
