"""VAE set-up shared by every pipeline: tiling as the run asks, the encoder dropped when it is not loaded."""

from __future__ import annotations

import torch

from sgld.config.schema import VaeConfig
from sgld.errors import UserError


def configure_vae(vae: torch.nn.Module, config: VaeConfig, needs_encoder: bool) -> None:
    """Tiling (``vae.tiling``, or ``vae.sp``, which splits a tiled decode's tiles); no encoder unless loaded.

    ``needs_encoder``: the family encodes its input image with the VAE (edit and image-to-video), so
    ``load_encoder=false`` cannot run it.
    """
    if config.tiling or config.sp:
        enable_vae_tiling(vae, config.tile_sample_min_height, config.tile_sample_min_width)
    if not config.load_encoder:
        if needs_encoder:
            raise UserError("vae.load_encoder=false: this model encodes its input image with the VAE encoder; "
                            "leave load_encoder on", param="vae.load_encoder")
        vae.encoder = None


def enable_vae_tiling(vae: torch.nn.Module, tile_height: int | None, tile_width: int | None) -> None:
    """Tiled VAE decode; strides follow the tile size (3/4 of it, diffusers' 192/256 ratio).

    diffusers keeps its default 192-pixel stride whatever the tile size, so a tile smaller
    than that would skip parts of the image.
    """
    import inspect

    if "tile_sample_min_height" not in inspect.signature(vae.enable_tiling).parameters:
        if tile_height is not None or tile_width is not None:
            raise UserError(
                f"{type(vae).__name__} tiles at its own size; leave tile_sample_min_height/width unset",
                param="vae.tile_sample_min_height",
            )
        vae.enable_tiling()
        return
    kwargs = {}
    if tile_height is not None:
        kwargs.update(tile_sample_min_height=tile_height, tile_sample_stride_height=tile_height * 3 // 4)
    if tile_width is not None:
        kwargs.update(tile_sample_min_width=tile_width, tile_sample_stride_width=tile_width * 3 // 4)
    vae.enable_tiling(**kwargs)
