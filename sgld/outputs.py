"""Output files: safe names inside the output directory, MP4 and image writers."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from sgld.errors import UserError

VIDEO_EXTENSIONS = (".mp4",)
IMAGE_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(text: str, max_length: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, _ and -), never empty."""
    cleaned = _UNSAFE.sub("_", text).strip("_")[:max_length].strip("_")
    return cleaned or "output"


def check_output_file_name(file_name: str, kind: str) -> str:
    """The file name to write (extension added when missing); UserError if it is not a plain name."""
    allowed = VIDEO_EXTENSIONS if kind == "video" else tuple(IMAGE_EXTENSIONS)
    if file_name != Path(file_name).name or file_name in (".", "..") or "\\" in file_name or "\0" in file_name:
        raise UserError(
            f"output file name {file_name!r} must be a plain file name without directories "
            f"(use --output-path for the directory)",
            param="output_file_name",
        )
    stem, ext = os.path.splitext(file_name)
    if not ext:
        ext = allowed[0]
    if ext.lower() not in allowed:
        raise UserError(f"output file name {file_name!r}: a {kind} is saved as {', '.join(allowed)}", param="output_file_name")
    return stem + ext


def output_path(output_dir: str | Path, file_name: str | None, prompt: str, seed: int, kind: str) -> Path:
    """Where to write one result; always inside ``output_dir``.

    An explicit ``file_name`` must be a plain name (no directories, no ``..``); its
    extension must suit the output kind and is added when missing. Without one, the name
    is made from the prompt and seed, with a counter when that file already exists.
    """
    out_dir = Path(output_dir).expanduser().resolve()
    default_ext = ".mp4" if kind == "video" else ".png"
    if file_name:
        path = out_dir / check_output_file_name(file_name, kind)
    else:
        base = f"{slug(prompt)}_seed{seed}"
        path = out_dir / f"{base}{default_ext}"
        counter = 1
        while path.exists():
            path = out_dir / f"{base}_{counter}{default_ext}"
            counter += 1
    if out_dir not in path.resolve().parents:
        raise UserError(f"output file {path} would be outside {out_dir}", param="output_file_name")
    return path


def _atomic_target(path: Path) -> tuple[int, Path]:
    """A temporary file beside ``path``: renamed into place only once fully written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    return fd, Path(tmp)


def save_video(frames: np.ndarray, path: Path, fps: int) -> Path:
    """Write uint8 frames (F, H, W, 3) as H.264 yuv420p MP4 through imageio-ffmpeg."""
    import imageio_ffmpeg

    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        height, width = frames.shape[1:3]
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            output_params=["-crf", "18"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_image(frame: np.ndarray, path: Path) -> Path:
    """Write one uint8 (H, W, 3) frame; the format follows the extension (PNG/JPEG/WebP)."""
    from PIL import Image

    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(frame).save(fh, format=IMAGE_EXTENSIONS[path.suffix.lower()])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
