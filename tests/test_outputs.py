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
