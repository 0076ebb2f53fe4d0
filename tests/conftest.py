"""Shared fixtures: one SGLD_HOME per test session, so each tiny model is built once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def sgld_home(tmp_path_factory) -> Path:
    """A fresh model cache for the session (subprocesses inherit it through the env)."""
    home = Path(os.environ.get("SGLD_TEST_HOME") or tmp_path_factory.mktemp("sgld_home"))
    os.environ["SGLD_HOME"] = str(home)
    # No test reaches the Hugging Face Hub (tests that cover downloading fake it).
    os.environ["HF_HUB_OFFLINE"] = "1"
    return home


@pytest.fixture(scope="session")
def tiny_wan_folder(sgld_home) -> Path:
    from sgld.model_builders.tiny import materialize_tiny

    return materialize_tiny("tiny-wan-t2v")


@pytest.fixture(scope="session")
def tiny_wan22_folder(sgld_home) -> Path:
    from sgld.model_builders.tiny import materialize_tiny

    return materialize_tiny("tiny-wan22-t2v")


@pytest.fixture(scope="session")
def tiny_wan_generator(tiny_wan_folder):
    from sgld import DiffGenerator

    return DiffGenerator.from_pretrained("tiny-wan-t2v")


@pytest.fixture(scope="session")
def generators(sgld_home):
    """``generators(name)``: a DiffGenerator of a built-in tiny model, loaded once per session."""
    from sgld import DiffGenerator

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = DiffGenerator.from_pretrained(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def input_png(tmp_path_factory) -> Path:
    """A fixed 56x40 RGB PNG (a gradient with a red square): the input image of edit-model tests."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:40, 0:56]
    pixels = np.stack([x * 4, y * 6, 255 - x * 4], axis=-1).astype(np.uint8)
    pixels[10:30, 20:40] = (250, 40, 30)
    path = tmp_path_factory.mktemp("inputs") / "input.png"
    Image.fromarray(pixels).save(path)
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` in a subprocess with the session's env; text output."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def read_mp4(path: Path):
    """(metadata, frames as a list of uint8 arrays (H, W, 3)) of an MP4, decoded by ffmpeg."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    return meta, frames


def read_streams(media: Path | bytes) -> dict:
    """Each stream of a media file (a path, or its bytes) as PyAV reads it back: kind -> frames or samples,
    seconds, rate, channels, codec."""
    import io

    import av

    out = {}
    with av.open(io.BytesIO(media) if isinstance(media, bytes) else str(media)) as container:
        for stream in container.streams:
            decoded = list(container.decode(stream))
            container.seek(0)
            if stream.type == "video":
                out["video"] = {"frames": len(decoded), "seconds": len(decoded) / float(stream.average_rate)}
            elif stream.type == "audio":
                samples = sum(frame.samples for frame in decoded)
                out["audio"] = {"samples": samples, "seconds": samples / stream.rate, "rate": stream.rate,
                                "channels": stream.codec_context.channels, "codec": stream.codec_context.name}
    return out


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(reason: str):
    """Skip on a developer machine; fail in CI, which must run the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs Chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        import playwright.sync_api as playwright
    except ImportError:
        _missing("Playwright is not installed (pip install playwright)")
    path = chromium_path()
    if path is None:
        _missing("no Chromium binary on PATH (Debian: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module of tiny-model tests, restored after: tiny tensors gain nothing from
    threads, and on a loaded 2-core machine two threads made each tiny call 10-25x slower (0.2 s against 2-6 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
