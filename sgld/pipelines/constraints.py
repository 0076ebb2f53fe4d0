"""What sizes and lengths each family accepts, read from a folder's JSON configs (no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sgld.errors import UserError
from sgld.request import Request
from sgld.stages.validation import (
    IMAGE_NEVER, IMAGE_OPTIONAL, IMAGE_REQUIRED, check_image_request, check_video_request,
)


def wan_size_constraints(vae_config: Mapping[str, Any], dit_config: Mapping[str, Any]) -> tuple[int, int]:
    """(multiple that height/width must be, temporal VAE factor) of a Wan model."""
    patch = dit_config["patch_size"]
    return vae_config["scale_factor_spatial"] * max(patch[1], patch[2]), vae_config["scale_factor_temporal"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _wan_dit_config(folder: Path) -> dict:
    """The first expert's config (Wan2.2 A14B folders may hold only ``transformer_2``)."""
    for name in ("transformer", "transformer_2"):
        if (folder / name / "config.json").is_file():
            return _read_json(folder / name / "config.json")
    return _read_json(folder / "transformer" / "config.json")  # missing: the usual file-not-found message


def check_wan_request_in_folder(folder: Path, req: Request, image: str = IMAGE_NEVER) -> None:
    """Validate ``req`` against a Wan folder's configs."""
    constraints = wan_size_constraints(_read_json(folder / "vae" / "config.json"), _wan_dit_config(folder))
    check_video_request(req, *constraints, image=image)


def hunyuan_size_constraints(vae_config: Mapping[str, Any], dit_config: Mapping[str, Any]) -> tuple[int, int]:
    """(multiple that height/width must be, temporal VAE factor) of a HunyuanVideo model."""
    return vae_config["spatial_compression_ratio"] * dit_config["patch_size"], vae_config["temporal_compression_ratio"]


def check_hunyuan_request_in_folder(folder: Path, req: Request, image: str = IMAGE_NEVER) -> None:
    """Validate ``req`` against a HunyuanVideo folder's configs."""
    constraints = hunyuan_size_constraints(_read_json(folder / "vae" / "config.json"),
                                           _read_json(folder / "transformer" / "config.json"))
    check_video_request(req, *constraints, image=image)


def flux_vae_scale(vae_config: Mapping[str, Any]) -> int:
    """FLUX's VAE downsampling factor: one per block after the first."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def qwen_vae_scale(vae_config: Mapping[str, Any]) -> int:
    """Qwen-Image's VAE downsampling factor: one per temporal-downsample entry."""
    return 2 ** len(vae_config["temperal_downsample"])


def check_flux_request_in_folder(folder: Path, req: Request, image: str = IMAGE_NEVER) -> None:
    """Height/width multiples of 2x the VAE factor (2x2 packing), one frame."""
    check_image_request(req, 2 * flux_vae_scale(_read_json(folder / "vae" / "config.json")), image == IMAGE_REQUIRED)


def check_qwen_request_in_folder(folder: Path, req: Request, image: str = IMAGE_NEVER) -> None:
    """As FLUX, with Qwen-Image's VAE."""
    check_image_request(req, 2 * qwen_vae_scale(_read_json(folder / "vae" / "config.json")), image == IMAGE_REQUIRED)


# family -> what it writes ("video": mp4, "image": png/jpeg/webp).
OUTPUT_KINDS = {
    "wan": "video",
    "wan_ti2v": "video",
    "wan_i2v": "video",
    "flux": "image",
    "hunyuan": "video",
    "qwen_image": "image",
    "qwen_image_edit": "image",
}

# Families that transform an input image (image_path required), and those that take one optionally.
NEEDS_IMAGE = {"qwen_image_edit", "wan_i2v"}
TAKES_IMAGE = NEEDS_IMAGE | {"wan_ti2v"}

# Families whose DiT has no sequence-parallel plan in diffusers (no Ulysses/ring split of its tokens).
NO_SEQUENCE_PARALLEL = {"hunyuan"}

# Families whose DiT attention takes a mask (text padding), and the DiT class that does it.
MASKED_ATTENTION = {"hunyuan": "HunyuanVideoTransformer3DModel"}
# Attention backends that take no attention mask (diffusers raises on one).
MASKLESS_BACKENDS = ("sage", "fa3")


def image_mode(family: str) -> str:
    """Whether ``family`` takes an input image: IMAGE_REQUIRED, IMAGE_OPTIONAL or IMAGE_NEVER."""
    if family in NEEDS_IMAGE:
        return IMAGE_REQUIRED
    return IMAGE_OPTIONAL if family in TAKES_IMAGE else IMAGE_NEVER


# family -> request check from the folder alone (folder, request, image mode): runs before any weights load.
FOLDER_CHECKS = {
    "wan": check_wan_request_in_folder,
    "wan_ti2v": check_wan_request_in_folder,
    "wan_i2v": check_wan_request_in_folder,
    "flux": check_flux_request_in_folder,
    "hunyuan": check_hunyuan_request_in_folder,
    "qwen_image": check_qwen_request_in_folder,
    "qwen_image_edit": check_qwen_request_in_folder,
}


def check_request_in_folder(family: str, folder: Path, req: Request) -> None:
    """Raise UserError when the model in ``folder`` cannot run ``req``."""
    FOLDER_CHECKS[family](folder, req, image_mode(family))


class FamilyTraits:
    """What a model family is, derived from ``self.family``: shared by loaded pipelines and FolderModel."""

    family: str

    @property
    def output_kind(self) -> str:
        """"video" (mp4) or "image" (png/jpeg/webp)."""
        return OUTPUT_KINDS[self.family]

    @property
    def needs_image(self) -> bool:
        """True for models that transform an input image (``image_path``): edit and image-to-video."""
        return self.family in NEEDS_IMAGE

    def check_run(self, run) -> None:
        """Raise UserError before any rank starts or weights load when the family cannot run ``run``'s settings."""
        self.check_parallel(run.parallel.sp_size)
        self.check_attention_backend(run.model.attention_backend)

    def check_parallel(self, sp_size: int | None) -> None:
        """Raise UserError before any rank starts when the family cannot split its tokens ``sp_size`` ways."""
        if (sp_size or 1) > 1 and self.family in NO_SEQUENCE_PARALLEL:
            raise UserError(f"sp_size={sp_size}: {self.family} models have no sequence-parallel split yet; "
                            "run them with --sp-size 1 (one GPU per run)", param="sp_size")

    @property
    def masks_attention(self) -> bool:
        """True when the family's DiT attention takes a mask, which rules out the mask-less backends."""
        return self.family in MASKED_ATTENTION

    def check_attention_backend(self, backend: str) -> None:
        """Raise UserError before any weights load when ``backend`` cannot take this family's attention mask."""
        if backend in MASKLESS_BACKENDS and self.masks_attention:
            raise UserError(f"attention_backend={backend!r} takes no attention mask, and "
                            f"{MASKED_ATTENTION[self.family]} masks its text padding; use auto, cudnn, flash or "
                            "efficient", param="attention_backend")

    @property
    def takes_image(self) -> bool:
        """True when an input image is accepted: required (``needs_image``) or optional (Wan2.2 TI2V)."""
        return self.family in TAKES_IMAGE

    @property
    def image_mode(self) -> str:
        """IMAGE_REQUIRED, IMAGE_OPTIONAL or IMAGE_NEVER (what ``check_video_request`` takes)."""
        return image_mode(self.family)


@dataclass(frozen=True)
class FolderModel(FamilyTraits):
    """A model known from its folder's JSON configs alone: what its Pipeline would answer, without weights."""

    family: str
    folder: Path

    @classmethod
    def of(cls, model_path: str) -> "FolderModel":
        """Resolve ``model_path`` (building a tiny model if needed) and read its family."""
        from sgld.models.registry import family_of, read_model_index, resolve_model_folder

        folder = resolve_model_folder(model_path)
        return cls(family_of(read_model_index(folder), str(folder)), folder)

    def check_request(self, req: Request) -> None:
        """The request check the loaded pipeline runs, from the folder's configs."""
        check_request_in_folder(self.family, self.folder, req)
