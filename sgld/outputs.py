"""Output files: safe names inside the output directory, MP4 (silent or with sound), WAV and image writers."""

from __future__ import annotations

import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from sgld.errors import UserError

VIDEO_EXTENSIONS = (".mp4",)
AUDIO_EXTENSION = ".wav"
IMAGE_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# SGLang's output_quality levels as the compression (quality, 0-100) they stand for; "default" is each writer's own.
QUALITY_LEVELS = {"maximum": 100, "high": 90, "medium": 55, "low": 35}
# H.264 quality when no compression is asked for: visually lossless for generated video.
DEFAULT_CRF = 18
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


def video_crf(compression: int | None) -> int:
    """The H.264 CRF for a quality of 0-100 (SGLang's output_compression: 100 lossless, 0 worst); None: DEFAULT_CRF."""
    return DEFAULT_CRF if compression is None else int((1 - compression / 100) * 51)


def save_video(frames: np.ndarray, path: Path, fps: int, compression: int | None = None,
               preset: str | None = None) -> Path:
    """Write uint8 frames (F, H, W, 3) as H.264 yuv420p MP4 through imageio-ffmpeg.

    ``compression``: quality 0-100 (None: crf 18); ``preset``: libx264's speed/size trade-off (None: medium).
    """
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
            output_params=["-crf", str(video_crf(compression)), *(["-preset", str(preset)] if preset else [])],
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


def save_image(frame: np.ndarray, path: Path, compression: int | None = None) -> Path:
    """Write one uint8 (H, W, 3) frame; the format follows the extension (PNG/JPEG/WebP).

    ``compression``: JPEG/WebP quality 0-100 (None: Pillow's 75); PNG is lossless and ignores it.
    """
    from PIL import Image

    fmt = IMAGE_EXTENSIONS[path.suffix.lower()]
    quality = {} if compression is None or fmt == "PNG" else {"quality": compression}
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(frame).save(fh, format=fmt, **quality)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def audio_file_for(video: Path) -> Path:
    """Where ``output.audio: wav`` writes a video's sound: beside it, ``<name>.wav``."""
    return video.with_suffix(AUDIO_EXTENSION)


def fit_audio(waveform: np.ndarray, samples: int) -> np.ndarray:
    """``waveform`` (channels, n) trimmed or padded with silence to ``samples``, as float32 in [-1, 1].

    A model's waveform need not last exactly as long as its frames (LTX-2 rounds the duration to whole audio
    latents, e.g. 45 ms short for 9 frames at 24 fps), and a muxed file must not make either stream outlast the other.
    """
    if waveform.ndim != 2:
        raise ValueError(f"a waveform is (channels, samples), got shape {waveform.shape}")
    waveform = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)[:, :samples]
    return np.pad(waveform, ((0, 0), (0, samples - waveform.shape[1])))


def _layout(channels: int) -> str:
    layouts = {1: "mono", 2: "stereo"}
    if channels not in layouts:
        raise ValueError(f"audio with {channels} channels: mono and stereo are written")
    return layouts[channels]


def save_video_with_audio(frames: np.ndarray, path: Path, fps: int, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write uint8 frames (F, H, W, 3) and a float waveform (channels, samples) as one MP4: H.264 + AAC, through PyAV.

    The audio is cut or padded to the video's length (F / fps), and keeps its sample rate and channel count.
    This is diffusers' ``encode_video`` (the LTX-2 reference's muxer) with what it leaves out: the silent
    writer's quality (crf 18), mono kept mono, the two streams of equal length, no progress bar, an atomic write.
    """
    import av

    layout = _layout(waveform.shape[0])
    if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sizes: repeat the last row / column
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    audio = fit_audio(waveform, round(len(frames) * sample_rate / fps))
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        # faststart: the index first, so a browser plays the file while it downloads
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "18"})
            video.height, video.width = frames.shape[1:3]
            video.pix_fmt = "yuv420p"
            sound = container.add_stream("aac", rate=sample_rate, layout=layout)
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(video.encode())
            # AAC's own sample format (planar float): no resampling; PyAV cuts the frame into the encoder's sizes.
            block = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
            block.sample_rate, block.pts = sample_rate, 0
            container.mux(sound.encode(block))
            container.mux(sound.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_wav(waveform: np.ndarray, path: Path, sample_rate: int) -> Path:
    """Write a float waveform (channels, samples) in [-1, 1] as 16-bit PCM WAV."""
    import wave

    _layout(waveform.shape[0])
    pcm = np.round(fit_audio(waveform, waveform.shape[1]) * 32767).astype("<i2")
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh, wave.open(fh, "wb") as out:
            out.setnchannels(pcm.shape[0])
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(np.ascontiguousarray(pcm.T).tobytes())  # WAV interleaves the channels
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
