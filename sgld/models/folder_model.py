"""A model known from its folder's JSON configs alone: what its Pipeline would answer, without weights or torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sgld.families import FamilySpec, SizeConstraints, family_of_index
from sgld.models.registry import read_model_index, resolve_model_folder
from sgld.request import Request


@dataclass(frozen=True)
class FolderModel:
    """A DescribedModel read from a folder: the pre-load checks and the multi-rank server's model."""

    spec: FamilySpec
    folder: Path
    constraints: SizeConstraints
    sample_rate: Optional[int] = None  # the sound's, for a model that makes sound

    @classmethod
    def of(cls, model_path: str, download: bool = True) -> "FolderModel":
        """Resolve ``model_path`` (building a tiny model or downloading a repo id if needed); its family and sizes."""
        folder = resolve_model_folder(model_path, download)
        spec = family_of_index(read_model_index(folder), str(folder))
        return cls(spec, folder, spec.constraints_in_folder(folder), spec.sample_rate_in_folder(folder))

    def check_request(self, req: Request) -> None:
        """The request check the loaded pipeline runs, from the folder's configs."""
        self.spec.check_request(req, self.constraints)
