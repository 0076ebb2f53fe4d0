"""Pipeline base: components plus an ordered list of stages over one Request."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sgld.config.schema import RunConfig
from sgld.models.loading import Placement, enable_vae_tiling
from sgld.pipelines.constraints import FamilyTraits
from sgld.request import Request
from sgld.stages.base import Stage


class Pipeline(FamilyTraits):
    """A family's pipeline. Subclasses build ``self.stages`` and ``check_request``."""

    family: ClassVar[str] = ""
    # Whether the family's VAE decode can split its tiles across ranks (vae.sp).
    supports_vae_sp: ClassVar[bool] = False

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device):
        if run.vae.sp and not self.supports_vae_sp:
            from sgld.errors import UserError

            raise UserError(f"vae_sp: splitting the VAE decode across ranks is supported for Wan models, "
                            f"not {self.family}; leave vae_sp off", param="vae.sp")
        self.check_attention_backend(run.model.attention_backend)
        self.components = components
        self.run = run
        self.device = device
        self.placement = Placement(device, self.offloaded_components(run), run.offload.pin_cpu_memory,
                                   self.layerwise_components(run))
        self.stages: list[Stage] = []

    def configure_video_vae(self, vae) -> None:
        """Tiling as the run asks (vae_sp splits the tiles of a tiled decode); the encoder dropped when not loaded."""
        vae_config = self.run.vae
        if vae_config.tiling or vae_config.sp:
            enable_vae_tiling(vae, vae_config.tile_sample_min_height, vae_config.tile_sample_min_width)
        if not vae_config.load_encoder:
            vae.encoder = None

    @staticmethod
    def offloaded_components(run: RunConfig) -> set[str]:
        """Component names that wait on the CPU between uses."""
        names = set()
        if run.offload.text_encoder:
            names |= {"text_encoder", "text_encoder_2"}
        if run.offload.dit:
            names |= {"transformer", "transformer_2"}
        if run.offload.vae:
            names.add("vae")
        return names

    @staticmethod
    def layerwise_components(run: RunConfig) -> set[str]:
        """Component names whose blocks wait on the CPU and are copied in one by one as they run."""
        return {"transformer", "transformer_2"} if run.offload.dit_layerwise else set()

    def check_request(self, req: Request) -> None:  # pragma: no cover - abstract
        """Raise UserError when this model cannot run ``req``; touches no weights."""
        raise NotImplementedError

    def __call__(self, req: Request) -> Request:
        for stage in self.stages:
            req = stage(req)
        return req
