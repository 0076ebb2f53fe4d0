"""The sweep report's contact sheet: a labelled grid a person can read, checked by reading the PNG back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sgld.report import LABEL_FONT_SIZE, PAD, ROW_LABEL_WIDTH, TILE, contact_sheet, render_label


def make_run(root: Path, name: str, overrides: list[str], outputs: list[tuple[str, int, Path]]) -> None:
    """A finished run directory as a prompt set leaves it: summary, manifest, Hydra overrides."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "summary.json").write_text(json.dumps({"done": len(outputs), "failed": 0, "total": len(outputs)}))
    (run / "manifest.jsonl").write_text("".join(json.dumps({"index": i, "prompt": p, "seed": s, "status": "ok",
                                                            "output": str(f)}) + "\n"
                                                for i, (p, s, f) in enumerate(outputs)))


def solid(path: Path, color, size=(32, 24)) -> Path:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = color
    pixels[0, 0] = (255, 255, 255)  # one odd pixel: nearest-neighbour upscaling keeps it a sharp block
    Image.fromarray(pixels).save(path)
    return path


def test_a_sweep_becomes_a_labelled_grid(tmp_path):
    a, b = solid(tmp_path / "a.png", (200, 0, 0)), solid(tmp_path / "b.png", (0, 0, 200))
    c = solid(tmp_path / "c.png", (0, 150, 0))
    make_run(tmp_path / "sweep", "0", ["sampling.seed=1", "model.precision=fp32"],
             [("a cat on a sofa", 1, a), ("a dog", 1, b)])
    make_run(tmp_path / "sweep", "1", ["sampling.seed=2"], [("a cat on a sofa", 2, c)])
    sheet_path = tmp_path / "sheet.png"
    assert contact_sheet(tmp_path / "sweep", sheet_path) == 3
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    cell_w, header, cell_h = TILE + PAD, 2 * (LABEL_FONT_SIZE + 4), TILE + LABEL_FONT_SIZE + 4 + PAD
    assert sheet.shape == (header + 2 * cell_h, ROW_LABEL_WIDTH + 2 * cell_w, 3)

    def crop(x, y, label):
        return sheet[y:y + label.height, x:x + label.width]

    # Column labels (prompts), row labels (each run's overrides) and the seeds are where they belong.
    for c, prompt in enumerate(["a cat on a sofa", "a dog"]):
        label = render_label(prompt, cell_w - PAD, lines=2)
        assert np.array_equal(crop(ROW_LABEL_WIDTH + c * cell_w, 0, label), np.asarray(label))
    for r, settings in enumerate(["sampling.seed=1 model.precision=fp32", "sampling.seed=2"]):
        label = render_label(settings, ROW_LABEL_WIDTH - PAD, lines=TILE // (LABEL_FONT_SIZE + 4))
        assert np.array_equal(crop(0, header + r * cell_h, label), np.asarray(label))
    seed = render_label("seed 2", TILE)
    assert np.array_equal(crop(ROW_LABEL_WIDTH, header + cell_h + TILE, seed), np.asarray(seed))
    # Tiles: 32x24 outputs upscaled 8x nearest-neighbour (the odd pixel is an 8x8 block), empty cells white.
    tile = sheet[header:header + 192, ROW_LABEL_WIDTH:ROW_LABEL_WIDTH + TILE]
    assert (tile[:8, :8] == 255).all() and (tile[8:, 8:] == (200, 0, 0)).all()
    assert (sheet[header + cell_h:header + cell_h + 192, ROW_LABEL_WIDTH + 8:ROW_LABEL_WIDTH + TILE] == (0, 150, 0)).all()
    assert (sheet[header + cell_h:header + 2 * cell_h, ROW_LABEL_WIDTH + cell_w:] == 255).all()


def test_a_video_shows_its_first_middle_and_last_frames(tmp_path):
    from sgld.outputs import save_video

    frames = np.zeros((9, 16, 16, 3), dtype=np.uint8)
    for i, value in enumerate(np.linspace(0, 255, 9).astype(np.uint8)):
        frames[i] = value
    video = save_video(frames, tmp_path / "v.mp4", 8)
    make_run(tmp_path / "run", ".", [], [("a fox", 7, video)])
    assert contact_sheet(tmp_path / "run", tmp_path / "sheet.png") == 1
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB")).astype(int)
    header = 2 * (LABEL_FONT_SIZE + 4)
    middles = [sheet[header + TILE // 2, ROW_LABEL_WIDTH + f * TILE + TILE // 2].mean() for f in range(3)]
    assert abs(middles[0] - 0) < 12 and abs(middles[1] - 127) < 12 and abs(middles[2] - 255) < 12


def test_the_html_report_plays_the_videos_in_a_browser(tmp_path, browser):
    from sgld.outputs import save_video
    from sgld.report import html_report

    frames = np.zeros((9, 16, 16, 3), dtype=np.uint8)
    video = save_video(frames, tmp_path / "v.mp4", 8)
    image = solid(tmp_path / "a.png", (200, 0, 0))
    make_run(tmp_path / "sweep", "0", ["sampling.seed=1"], [("a fox <runs>", 7, video)])
    make_run(tmp_path / "sweep", "1", ["sampling.seed=2"], [("a cat", 2, image)])
    page_file = tmp_path / "report.html"
    assert html_report(tmp_path / "sweep", page_file) == 2
    text = page_file.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: no CDN, outputs embedded
    page = browser.new_page()
    page.goto(page_file.as_uri())
    assert page.locator("thead th").all_text_contents() == ["run", "a fox <runs>", "a cat"]
    assert page.locator("tbody th").all_text_contents() == ["sampling.seed=1", "sampling.seed=2"]
    duration = page.wait_for_function("() => { const v = document.querySelector('video');"
                                      " return v && v.readyState >= 1 ? v.duration : null; }", timeout=30_000).json_value()
    assert abs(duration - 9 / 8) < 0.2
    assert page.locator("img").evaluate("img => img.naturalWidth") == 32
    assert "seed: 7" in page.locator("figure").first.get_attribute("title")
    page.close()
