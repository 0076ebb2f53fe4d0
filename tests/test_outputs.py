"""Output naming (sanitised, inside the output dir) and the MP4 / image writers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgld.errors import UserError
from sgld.outputs import check_output_file_name, output_path, save_image, save_video, slug

from tests.conftest import read_mp4


@pytest.mark.parametrize(
    "text,expected",
    [("a red fox", "a_red_fox"), ("../../etc/passwd", "etc_passwd"), ("日本語 🦊", "output"), ("", "output"), ("x" * 200, "x" * 60)],
)
def test_slug(text, expected):
    assert slug(text) == expected


def test_auto_names_stay_inside_and_never_overwrite(tmp_path):
    first = output_path(tmp_path, None, "../../a fox/..", 7, "video")
    assert first.parent == tmp_path and first.name == "a_fox_seed7.mp4"
    first.write_bytes(b"x")
    assert output_path(tmp_path, None, "../../a fox/..", 7, "video").name == "a_fox_seed7_1.mp4"
    assert output_path(tmp_path, None, "cat", 1, "image").name == "cat_seed1.png"


@pytest.mark.parametrize("name", ["../x.mp4", "/etc/passwd", "a/b.mp4", "..", ".", "a\\b.mp4", "x\0.mp4"])
def test_names_with_directories_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="plain file name"):
        output_path(tmp_path, name, "p", 1, "video")


def test_extensions(tmp_path):
    assert check_output_file_name("clip", "video") == "clip.mp4"
    assert check_output_file_name("pic", "image") == "pic.png"
    assert check_output_file_name("pic.webp", "image") == "pic.webp"
    with pytest.raises(UserError, match="saved as .mp4"):
        check_output_file_name("clip.gif", "video")
    with pytest.raises(UserError, match="saved as"):
        check_output_file_name("pic.bmp", "image")


def test_video_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8), 8, axis=1), 8, axis=2)
    path = save_video(frames, tmp_path / "clip.mp4", fps=12)
    meta, decoded = read_mp4(path)
    assert meta["size"] == (96, 64) and meta["fps"] == 12 and meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert len(decoded) == 5
    # Lossy but faithful: 8x8 blocks of colour survive H.264 at crf 18.
    assert np.abs(np.stack(decoded).astype(int) - frames.astype(int)).mean() < 12
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp files left behind


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".webp", "WEBP")])
def test_image_formats(tmp_path, ext, fmt):
    frame = np.full((16, 24, 3), 200, dtype=np.uint8)
    path = save_image(frame, tmp_path / f"img{ext}")
    with Image.open(path) as img:
        assert img.format == fmt and img.size == (24, 16)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import imageio_ffmpeg

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    with pytest.raises(OSError):
        save_video(np.zeros((1, 16, 16, 3), np.uint8), tmp_path / "x.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def _read_av(path):
    """What PyAV sees in a file: per stream type, codec, duration (s), rate, channels, and the decoded samples."""
    import av

    with av.open(str(path)) as container:
        info = {s.type: dict(codec=s.codec_context.name, seconds=float(s.duration * s.time_base)) for s in container.streams}
        video, audio = container.streams.video[0], container.streams.audio[0]
        info["video"].update(fps=video.average_rate, pix_fmt=video.codec_context.pix_fmt)
        info["audio"].update(rate=audio.sample_rate, channels=audio.codec_context.channels)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return info, frames, samples


def _tones(rate: int, seconds: float, *hertz: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * np.outer(hertz, t))).astype(np.float32)


def _peak_hertz(channel: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(channel))) * rate / len(channel))


def test_video_with_sound_is_one_mp4_with_h264_and_aac_of_equal_length(tmp_path):
    from sgld.outputs import save_video_with_audio

    fps, rate = 24, 24000
    frames = np.repeat(np.repeat(np.random.default_rng(0).integers(0, 256, (9, 8, 8, 3), dtype=np.uint8), 8, 1), 8, 2)
    # LTX-2's case: 9 frames at 24 fps are 0.375 s, its waveform 0.33 s (7920 samples); left 440 Hz, right 660 Hz.
    path = save_video_with_audio(frames, tmp_path / "clip.mp4", fps, _tones(rate, 0.33, 440, 660), rate)
    info, decoded, samples = _read_av(path)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    assert info["video"]["pix_fmt"] == "yuv420p" and info["video"]["fps"] == fps and len(decoded) == 9
    assert abs(info["audio"]["seconds"] - info["video"]["seconds"]) <= 1 / fps
    assert abs(info["video"]["seconds"] - 9 / fps) < 1e-6
    assert info["audio"]["rate"] == rate and info["audio"]["channels"] == 2
    assert np.abs(np.stack(decoded).astype(int) - frames.astype(int)).mean() < 12
    # The channels keep their order and their sound (the padding to 0.375 s is silence).
    assert [round(_peak_hertz(samples[c, : round(0.3 * rate)], rate), -1) for c in (0, 1)] == [440, 660]
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_longer_mono_audio_is_cut_to_the_video_and_stays_mono(tmp_path):
    from sgld.outputs import save_video_with_audio

    frames = np.zeros((12, 32, 48, 3), np.uint8)
    path = save_video_with_audio(frames, tmp_path / "mono.mp4", 8, _tones(16000, 2.0, 1000), 16000)
    info, decoded, samples = _read_av(path)
    assert info["audio"]["rate"] == 16000 and info["audio"]["channels"] == 1 and samples.shape[0] == 1
    assert abs(info["audio"]["seconds"] - 1.5) <= 1 / 8 and abs(info["video"]["seconds"] - 1.5) < 1e-6


def test_odd_sizes_and_unsupported_channel_counts(tmp_path):
    from sgld.outputs import save_video_with_audio

    path = save_video_with_audio(np.zeros((3, 15, 17, 3), np.uint8), tmp_path / "odd.mp4", 12,
                                 _tones(24000, 0.25, 440, 440), 24000)
    assert _read_av(path)[1][0].shape == (16, 18, 3)  # edge-padded to even sizes for yuv420p
    with pytest.raises(ValueError, match="3 channels"):
        save_video_with_audio(np.zeros((3, 16, 16, 3), np.uint8), tmp_path / "x.mp4", 12,
                              _tones(24000, 0.25, 1, 2, 3), 24000)
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]


def test_fit_audio_pads_with_silence_and_cuts():
    from sgld.outputs import fit_audio

    wave = np.array([[0.5, -2.0, 0.25]], np.float32)
    assert fit_audio(wave, 5).tolist() == [[0.5, -1.0, 0.25, 0.0, 0.0]]  # clipped to [-1, 1], then padded
    assert fit_audio(wave, 2).tolist() == [[0.5, -1.0]]


def test_wav_round_trip(tmp_path):
    import wave

    from sgld.outputs import audio_file_for, save_wav

    path = audio_file_for(tmp_path / "clip.mp4")
    assert path.name == "clip.wav"
    original = _tones(24000, 0.1, 440, 660)
    save_wav(original, path, 24000)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth(), wav.getnframes()) == (2, 24000, 2, 2400)
        pcm = np.frombuffer(wav.readframes(2400), "<i2").reshape(-1, 2).T
    assert np.abs(pcm / 32767 - original).max() <= 1 / 32767
