"""bench/quality.py: its --tiny mode runs every variant and reports steps computed/cached and the metrics, and times
RIFE and Real-ESRGAN on random weights of their released shapes; its SSIM equals scikit-image's Gaussian-window SSIM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_tiny_mode_runs_every_variant(tmp_path, sgld_home):
    out = tmp_path / "quality.json"
    proc = subprocess.run([sys.executable, "bench/quality.py", "--tiny", "--finishing", "--random-finishing",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    finishing = results.pop("finishing")
    assert list(results) == ["lossless", "teacache", "cache_dit", "cache_dit_mask"]
    # RIFE x2 and Real-ESRGAN x4 at their released shapes, on random weights (their time is the released weights').
    assert finishing["rife_x2"]["frames_out"] == 9 and finishing["esrgan_x4"]["size_out"] == [128, 128]
    assert finishing["rife_x2"]["warm_s"] > 0 and finishing["esrgan_x4"]["share_of_generation"] > 0
    for name in ("teacache", "cache_dit", "cache_dit_mask"):
        row = results[name]
        assert sum(row["computed"].values()) + sum(row["cached"].values()) >= row["steps"]
        assert row["psnr_db"] > 20 and 0 < row["ssim"] <= 1 and Path(row["file"]).is_file()
    # The fixed mask (cache-dit's medium preset for 8 steps, static policy): the same steps whatever the weights.
    assert results["cache_dit_mask"]["cached"] == {"cond": 2, "uncond": 2}


def test_ssim_equals_scikit_image():
    from skimage import metrics  # a test dependency (pyproject's test extra)
    sys.path.insert(0, str(REPO / "bench"))
    from quality import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    theirs = np.mean([metrics.structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                                    use_sample_covariance=True, data_range=255)
                      for x, y in zip(a, b)])
    assert abs(ssim(a, b) - theirs) < 1e-9
