"""Finishing of decoded frames, per request: RIFE frame interpolation (videos), then Real-ESRGAN upscaling.

SGLang's defaults: RIFE 4.22.lite from elfgum/RIFE-4.22.lite (flownet.pkl), Real-ESRGAN from ai-forever/Real-ESRGAN
(RealESRGAN_x2.pth / _x4.pth by the scale asked, else x4 then bicubic). Loaded models are kept (a few), so only a
request's first use of a model pays its load.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from sgld.finishing.weights import load_state_dict, resolve

log = logging.getLogger(__name__)

RIFE_DEFAULT = "elfgum/RIFE-4.22.lite"
ESRGAN_DEFAULT = "ai-forever/Real-ESRGAN"
_LOADED: "OrderedDict[tuple[str, str, str, bool], torch.nn.Module]" = OrderedDict()
_KEEP = 4
CHUNK = 8  # frames per pass: bounds the float copies of large upscaled frames


def finish(frames: np.ndarray, fps: int, settings: Any, video: bool, device: torch.device,
           download: bool = True, timings: dict | None = None, compile: bool = False) -> tuple[np.ndarray, int]:
    """uint8 (N, H, W, 3) frames and fps after the request's finishing (``settings``: a FinishingConfig).

    ``compile``: the run compiles its networks (``model.enable_torch_compile``), so the upscaler's repeated blocks
    are compiled too: x4 on a Wan 480p clip took 9.33 s eager against 5.71 s compiled on an H100, where the clip
    took 65 s to generate. The first use of each frame size pays the compile (12.6 s there; a server's warm-up pays
    it where its default finishing upscales), which a one-off run would not win back."""
    if settings.enable_frame_interpolation and video and frames.shape[0] > 1:
        start = time.perf_counter()
        net = _model("rife", settings.frame_interpolation_model_path or RIFE_DEFAULT, "flownet.pkl",
                     "frame_interpolation_model_path", device, download)
        frames = _interpolate(net, frames, settings.frame_interpolation_exp, settings.frame_interpolation_scale, device)
        fps *= 2 ** settings.frame_interpolation_exp
        _timed(timings, "frame_interpolation", start, device)
    if settings.enable_upscaling:
        start = time.perf_counter()
        scale = settings.upscaling_scale
        net = _model("esrgan", settings.upscaling_model_path or ESRGAN_DEFAULT, _esrgan_file(scale),
                     "upscaling_model_path", device, download, compile)
        frames = _upscale(net, frames, scale, device)
        _timed(timings, "upscaling", start, device)
    return frames, fps


def check_weights(settings: Any, video: bool, download: bool = True) -> None:
    """Raise UserError, before a request queues, when the weights its finishing names cannot be had (downloads are
    left to the run)."""
    if settings.enable_frame_interpolation and video:
        resolve(settings.frame_interpolation_model_path or RIFE_DEFAULT, "flownet.pkl",
                "frame_interpolation_model_path", download, fetch=False)
    if settings.enable_upscaling:
        resolve(settings.upscaling_model_path or ESRGAN_DEFAULT, _esrgan_file(settings.upscaling_scale),
                "upscaling_model_path", download, fetch=False)


def _esrgan_file(scale: int) -> str:
    """ai-forever's file for the scale: the x2 or x4 network (x4, then bicubic, for other scales)."""
    return f"RealESRGAN_x{scale if scale in (2, 4) else 4}.pth"


def _model(kind: str, reference: str, default_file: str, option: str, device: torch.device, download: bool,
           compile: bool = False):
    key = (kind, reference, default_file, compile)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    from sgld.errors import UserError

    path = resolve(reference, default_file, option, download)
    state = load_state_dict(path, option)
    try:
        if kind == "rife":
            from sgld.finishing.rife import load_ifnet

            net = load_ifnet(state)
        else:
            from sgld.finishing.realesrgan import build_upscaler

            net = build_upscaler(state)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{option}: {path.name}: {exc}", param=option) from None
    if kind == "esrgan":
        from sgld.finishing.realesrgan import prepare

        net = prepare(net, device, compile)
    else:
        net = net.to(device)
    log.info("%s weights loaded from %s%s", kind, path,
             " (compiled on first use)" if compile and kind == "esrgan" else "")
    _LOADED[key] = net
    while len(_LOADED) > _KEEP:
        _LOADED.popitem(last=False)
    return net


def _to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255


def _to_uint8(images: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """[0, 1] (N, 3, H, W) images as uint8 (N, H, W, 3), written into ``out`` when given. The layout change happens
    on the device: copying a permuted view to the host and joining the chunks there took ~2 s of an H100's 11.4 s
    x4 upscale of a Wan 480p clip (``bench/upscaler.py``: ``sgld finish()`` against ``eager``)."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if out is None:
        return pixels.cpu().numpy()
    torch.from_numpy(out).copy_(pixels)
    return out


def _interpolate(net, frames: np.ndarray, exp: int, scale: float, device: torch.device) -> np.ndarray:
    from sgld.finishing.rife import interpolate_pairs

    step = 2 ** exp
    out = np.empty(((frames.shape[0] - 1) * step + 1, *frames.shape[1:]), dtype=np.uint8)
    # Chunks overlap by one frame, which each chunk after the first drops: the pairs are the whole clip's.
    for start in range(0, frames.shape[0] - 1, CHUNK):
        chunk = interpolate_pairs(net, _to_tensor(frames[start:start + CHUNK + 1], device), exp, scale)
        first = start * step + (start > 0)
        _to_uint8(chunk if start == 0 else chunk[1:], out[first:first + chunk.shape[0] - (start > 0)])
    return out


def _upscale(net, frames: np.ndarray, scale: int, device: torch.device) -> np.ndarray:
    from sgld.finishing.realesrgan import BATCH, is_compiled, upscale

    n, h, w, c = frames.shape
    out = np.empty((n, h * scale, w * scale, c), dtype=np.uint8)
    # A compiled network sees a clip in full batches only (its tail padded); a single image runs alone.
    pad_tail = n > BATCH and is_compiled(net)
    for i in range(0, n, CHUNK):
        _to_uint8(upscale(net, _to_tensor(frames[i:i + CHUNK], device), scale, pad_tail=pad_tail), out[i:i + CHUNK])
    return out


def _timed(timings: dict | None, name: str, start: float, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if timings is not None:
        timings[name] = time.perf_counter() - start
