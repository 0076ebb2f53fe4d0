"""Which families take which per-request step cache: read before anything loads (no torch here).

Cache-DiT: the families whose DiT class cache-dit has a block adapter for, each run on its tiny model in
tests/test_cache_dit.py. TeaCache: the families with published rescale coefficients (sgld.levers.teacache).
First-block cache (diffusers' hooks, per run): the families it runs on.
"""

from __future__ import annotations

from sgld.errors import UserError

CACHE_DIT_FAMILIES = frozenset({"wan_t2v", "wan_i2v", "wan_ti2v", "flux", "flux2_klein", "flux2_dev", "qwen_image",
                                "qwen_image_edit", "qwen_image_edit_plus", "hunyuan", "hunyuan15_t2v", "hunyuan15_i2v",
                                "z_image"})
TEACACHE_FAMILIES = frozenset({"wan_t2v", "wan_i2v", "hunyuan", "flux"})
# diffusers' FirstBlockCache: the families whose DiT blocks it has registered and whose block outputs it can
# subtract (every family's tiny model was run with it; tests/test_speed_levers.py runs Wan, FLUX, Qwen-Image and
# HunyuanVideo). FLUX.2's single blocks return a list, which it cannot subtract (a TypeError inside diffusers
# mid-generation); HunyuanVideo-1.5's, LTX-2's and MiniMax-H3's blocks are not registered with it, and Z-Image's
# DiT has no cache hooks.
FIRST_BLOCK_FAMILIES = frozenset({"wan_t2v", "wan_i2v", "wan_ti2v", "hunyuan", "flux", "qwen_image", "qwen_image_edit",
                                  "qwen_image_edit_plus"})


def check_family(family: str, cache_dit: bool, teacache: bool, first_block: bool = False) -> None:
    """Raise UserError when ``family`` has no Cache-DiT / TeaCache / first-block cache and the run or request asks
    for it."""
    if first_block and family not in FIRST_BLOCK_FAMILIES:
        raise UserError(f"cache=first_block: diffusers' first-block cache does not run {family} models' DiT (it runs "
                        f"for {', '.join(sorted(FIRST_BLOCK_FAMILIES))}); run without it"
                        + (" or with Cache-DiT (--enable-cache-dit)" if family in CACHE_DIT_FAMILIES else ""),
                        param="cache")
    if cache_dit and family not in CACHE_DIT_FAMILIES:
        raise UserError(f"Cache-DiT: cache-dit has no block adapter for {family} models' DiT (it runs for "
                        f"{', '.join(sorted(CACHE_DIT_FAMILIES))}); run without it", param="enable_cache_dit")
    if teacache and family not in TEACACHE_FAMILIES:
        raise UserError(f"TeaCache: no published coefficients for {family} models (TeaCache exists for Wan2.1 T2V/"
                        f"I2V and Wan2.2 A14B (14B rows), HunyuanVideo and FLUX.1); use Cache-DiT or run without it",
                        param="enable_teacache")
