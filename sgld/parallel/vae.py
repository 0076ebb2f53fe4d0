"""VAE sp: the tiles of a tiled VAE decode are split across ranks and the video assembled on rank 0.

Wan: the tiling (tile and stride sizes, per-tile causal decode over time, blending) is the
same as diffusers' ``AutoencoderKLWan.tiled_decode``, so the result equals a single-process
tiled decode exactly; tile (i, j) is decoded by rank ``index % world_size``.

HunyuanVideo: its tiled decode (spatial tiles inside overlapping temporal chunks) calls the
decoder once per tile, independently, and blends the results linearly. Every rank runs the
VAE's own tiled decode, but computes only its share of decoder calls (round robin) and
puts zeros for the others; the sum over ranks is the full video, equal to a one-process
decode up to float rounding (the blend's products are added in another order).
"""

from __future__ import annotations

from typing import Optional

import torch

from sgld.parallel.state import ParallelState


def _tile_starts(size: int, stride: int) -> list[int]:
    return list(range(0, size, stride))


def _decode_tile(vae, z: torch.Tensor) -> torch.Tensor:
    """One spatial tile through the causal decoder, frame by frame (as diffusers does)."""
    vae.clear_cache()
    frames = []
    for k in range(z.shape[2]):
        vae._conv_idx = [0]
        tile = vae.post_quant_conv(z[:, :, k : k + 1])
        frames.append(vae.decoder(tile, feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(k == 0)))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


@torch.no_grad()
def parallel_tiled_decode(vae, z: torch.Tensor, state: ParallelState) -> Optional[torch.Tensor]:
    """Decode latents ``z`` (B, C, F, h, w) with the tiles spread over all ranks; the video on rank 0, else None."""
    import torch.distributed as dist
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    _, _, _, height, width = z.shape
    ratio = vae.spatial_compression_ratio
    tile_h, tile_w = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio
    if height <= tile_h and width <= tile_w:  # one tile: what vae.decode does untiled
        return vae.decode(z, return_dict=False)[0] if state.is_main else None
    stride_h, stride_w = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
    patch = vae.config.patch_size or 1
    out_stride_h, out_stride_w = vae.tile_sample_stride_height // patch, vae.tile_sample_stride_width // patch
    blend_h = vae.tile_sample_min_height // patch - out_stride_h
    blend_w = vae.tile_sample_min_width // patch - out_stride_w

    grid = [(i, j) for i in _tile_starts(height, stride_h) for j in _tile_starts(width, stride_w)]
    mine = {n: _decode_tile(vae, z[:, :, :, i : i + tile_h, j : j + tile_w]).cpu()
            for n, (i, j) in enumerate(grid) if n % state.world_size == state.rank}
    gathered = [None] * state.world_size if state.is_main else None
    dist.gather_object(mine, gathered, dst=0)
    if not state.is_main:
        return None
    tiles = {n: t.to(z.device) for part in gathered for n, t in part.items()}

    columns = len(_tile_starts(width, stride_w))
    rows = [[tiles[r * columns + c] for c in range(columns)] for r in range(len(grid) // columns)]
    result_rows = []
    for r, row in enumerate(rows):
        blended = []
        for c, tile in enumerate(row):
            if r > 0:
                tile = vae.blend_v(rows[r - 1][c], tile, blend_h)
            if c > 0:
                tile = vae.blend_h(row[c - 1], tile, blend_w)
            blended.append(tile[:, :, :, :out_stride_h, :out_stride_w])
        result_rows.append(torch.cat(blended, dim=-1))
    video = torch.cat(result_rows, dim=3)[:, :, :, : height * ratio // patch, : width * ratio // patch]
    if vae.config.patch_size is not None:
        video = unpatchify(video, patch_size=vae.config.patch_size)
    return torch.clamp(video, min=-1.0, max=1.0)


def _decoded_shape(vae, z: torch.Tensor) -> tuple[int, ...]:
    """Output shape of a HunyuanVideo-style causal decoder for latents ``z`` (B, C, F, h, w)."""
    b, _, frames, h, w = z.shape
    spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    return (b, vae.config.out_channels, (frames - 1) * temporal + 1, h * spatial, w * spatial)


@torch.no_grad()
def round_robin_decode(vae, z: torch.Tensor, state: ParallelState) -> Optional[torch.Tensor]:
    """Decode ``z`` with the decoder calls of the VAE's tiled decode shared round robin; the video on rank 0."""
    import torch.distributed as dist

    decoder = vae.decoder
    own_forward = decoder.forward
    calls = 0

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        nonlocal calls
        mine = calls % state.world_size == state.rank
        calls += 1
        return own_forward(x, *args, **kwargs) if mine else x.new_zeros(_decoded_shape(vae, x))

    decoder.forward = forward
    try:
        video = vae.decode(z, return_dict=False)[0].contiguous()
    finally:
        del decoder.forward  # back to the class's forward
    dist.reduce(video, dst=0, op=dist.ReduceOp.SUM)
    return video if state.is_main else None
