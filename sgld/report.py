"""``python -m sgld.report DIR``: a table across the runs under DIR (a prompt-set run, or a Hydra sweep).

Every directory holding a ``summary.json`` is one row: its Hydra overrides (from
``.hydra/overrides.yaml`` when present), outputs done/failed, model load time, s/output and
peak GPU memory from its manifest. ``--markdown FILE`` / ``--csv FILE`` write the table;
``--contact-sheet FILE.png`` draws every output in a labelled grid: one row per run (its overrides),
one column per prompt, the seed under each tile, videos as first / middle / last frame; ``--html FILE``
writes the same grid as one self-contained page with the videos playable and each tile's settings on hover.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from sgld.resume import records_by_index

COLUMNS = ("run", "settings", "done", "failed", "total", "load_s", "s_per_output", "peak_mem_gib")


def collect(root: Path) -> list[dict]:
    """One row per run directory under ``root`` (sorted by path)."""
    rows = []
    for summary_file in sorted(root.rglob("summary.json")):
        run_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
        peaks = []
        manifest = run_dir / "manifest.jsonl"
        if manifest.is_file():
            for line in manifest.read_text().splitlines():
                try:
                    peak = json.loads(line).get("peak_memory_bytes")
                except json.JSONDecodeError:
                    continue
                if peak:
                    peaks.append(peak)
        rows.append({
            "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
            "settings": " ".join(o for o in overrides if "output.path" not in o and "prompts_file" not in o),
            "done": summary["done"], "failed": summary["failed"], "total": summary["total"],
            "load_s": summary.get("load_seconds"), "s_per_output": summary.get("s_per_output"),
            "peak_mem_gib": round(max(peaks) / 2**30, 2) if peaks else None,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# Contact sheet layout: tiles of at least TILE px, labels in LABEL_FONT_SIZE px text.
TILE = 256
LABEL_FONT_SIZE = 16
ROW_LABEL_WIDTH = 280
PAD = 8


def label_font():
    """The labels' font (Pillow's bundled one, so the sheet looks the same on every machine)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=LABEL_FONT_SIZE)


def render_label(text: str, width: int, lines: int = 1):
    """``text`` as black-on-white label of ``width`` px and ``lines`` lines (wrapped, then cut with an ellipsis)."""
    from PIL import Image, ImageDraw

    font = label_font()
    line_height = LABEL_FONT_SIZE + 4
    image = Image.new("RGB", (width, line_height * lines), "white")
    draw = ImageDraw.Draw(image)
    words, rows = text.split(), []
    while words and len(rows) < lines:
        row = words.pop(0)
        while words and draw.textlength(f"{row} {words[0]}", font=font) <= width - 4:
            row += " " + words.pop(0)
        rows.append(row)
    if words and rows:
        rows[-1] = rows[-1].rstrip() + " …"
    for i, row in enumerate(rows):
        while draw.textlength(row, font=font) > width - 4 and len(row) > 2:
            row = row[:-2] + "…"
        draw.text((2, i * line_height), row, fill="black", font=font)
    return image


def sheet_cells(root: Path) -> tuple[list[str], list[str], dict[tuple[int, int], list[dict]]]:
    """(row labels: one per run, column labels: one per prompt, (row, column) -> its outputs' manifest records)."""
    rows, columns, cells = [], [], {}
    for row_info in collect(root):
        manifest = root / row_info["run"] / "manifest.jsonl"
        if not manifest.is_file():
            continue
        # The latest record of each output: an item made again after its line was edited has two.
        records = [r for r in records_by_index(manifest).values()
                   if r.get("status") == "ok" and Path(r.get("output", "")).is_file()]
        if not records:
            continue
        rows.append(row_info["settings"] or row_info["run"])
        for record in records:
            if record["prompt"] not in columns:
                columns.append(record["prompt"])
            cells.setdefault((len(rows) - 1, columns.index(record["prompt"])), []).append(record)
    return rows, columns, cells


def contact_sheet(root: Path, path: Path) -> int:
    """One row per run (its overrides as the label), one column per prompt, the seed under each tile; the tiles.

    Tiles are at least TILE px (small outputs upscaled nearest-neighbour, so pixels stay visible);
    a video shows its first, middle and last frame side by side.
    """
    from PIL import Image

    rows, columns, cells = sheet_cells(root)
    if not cells:
        return 0
    tiles = {key: [(_frames(Path(r["output"])), r["seed"]) for r in records] for key, records in cells.items()}
    per_cell = max(len(v) for v in tiles.values())
    strip = max(len(frames) for v in tiles.values() for frames, _ in v)  # 3 for videos, 1 for images
    cell_w = per_cell * (strip * TILE + PAD)
    header, seed_h = 2 * (LABEL_FONT_SIZE + 4), LABEL_FONT_SIZE + 4
    cell_h = TILE + seed_h + PAD
    sheet = Image.new("RGB", (ROW_LABEL_WIDTH + len(columns) * cell_w, header + len(rows) * cell_h), "white")
    for c, prompt in enumerate(columns):
        sheet.paste(render_label(prompt, cell_w - PAD, lines=2), (ROW_LABEL_WIDTH + c * cell_w, 0))
    for r, label in enumerate(rows):
        sheet.paste(render_label(label, ROW_LABEL_WIDTH - PAD, lines=TILE // (LABEL_FONT_SIZE + 4)),
                    (0, header + r * cell_h))
    count = 0
    for (r, c), entries in tiles.items():
        for k, (frames, seed) in enumerate(entries):
            x = ROW_LABEL_WIDTH + c * cell_w + k * (strip * TILE + PAD)
            y = header + r * cell_h
            for f, frame in enumerate(frames):
                sheet.paste(_fit(frame), (x + f * TILE, y))
            sheet.paste(render_label(f"seed {seed}", strip * TILE), (x, y + TILE))
            count += 1
    sheet.save(path)
    return count


def html_report(root: Path, path: Path) -> int:
    """The contact sheet's grid as one self-contained HTML page: videos playable side by side, each tile's
    settings and timings from the manifest on hover; outputs embedded as data URIs (no files beside it, no CDN)."""
    import base64
    import html

    rows, columns, cells = sheet_cells(root)
    if not cells:
        return 0
    kinds = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

    def tile(record: dict) -> str:
        file = Path(record["output"])
        data = f"data:{kinds.get(file.suffix.lower(), 'application/octet-stream')};base64," \
               f"{base64.b64encode(file.read_bytes()).decode('ascii')}"
        details = {**record.get("settings", {}), "seed": record.get("seed"), "seconds": record.get("seconds"),
                   **{f"{k} s": round(v, 3) for k, v in (record.get("timings") or {}).items()}}
        title = html.escape("\n".join(f"{k}: {v}" for k, v in details.items() if v is not None))
        media = (f'<video src="{data}" controls loop muted playsinline></video>' if file.suffix == ".mp4"
                 else f'<img src="{data}" alt="{html.escape(record["prompt"])}">')
        return f'<figure title="{title}">{media}<figcaption>seed {record.get("seed")}</figcaption></figure>'

    head = "".join(f"<th>{html.escape(p)}</th>" for p in columns)
    body = []
    for r, label in enumerate(rows):
        cells_html = "".join("<td>" + "".join(tile(rec) for rec in cells.get((r, c), [])) + "</td>"
                             for c in range(len(columns)))
        body.append(f'<tr><th scope="row">{html.escape(label)}</th>{cells_html}</tr>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sgld report: {html.escape(str(root))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; }}
thead th {{ max-width: {TILE}px; font-weight: 600; }}
tbody th {{ text-align: left; max-width: {ROW_LABEL_WIDTH}px; font-family: monospace; font-weight: 400; }}
figure {{ display: inline-block; margin: 0 6px 6px 0; }}
img, video {{ width: {TILE}px; image-rendering: pixelated; display: block; }}
figcaption {{ font-size: 0.85rem; color: #444; }}
</style></head>
<body><h1>sgld report</h1><p>{len(rows)} runs × {len(columns)} prompts; hover a tile for its settings and timings.</p>
<table><thead><tr><th>run</th>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    path.write_text(page, encoding="utf-8")
    return sum(len(v) for v in cells.values())


def _fit(frame):
    """``frame`` scaled to fit a TILE box: upscaled nearest-neighbour (crisp pixels), downscaled smoothly."""
    from PIL import Image

    scale = TILE / max(frame.size)
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    return frame.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def _frames(path: Path) -> list:
    """An image's one frame, or a video's first, middle and last frames (PIL)."""
    from PIL import Image

    if path.suffix != ".mp4":
        with Image.open(path) as image:
            return [image.convert("RGB")]
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    return [Image.fromarray(frames[i]) for i in picks]


def main(argv: list[str] | None = None) -> int:
    """Print the table; write the files asked for."""
    parser = argparse.ArgumentParser(prog="python -m sgld.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--csv", type=Path, help="write the table as CSV")
    parser.add_argument("--contact-sheet", type=Path,
                        help="write every output as one labelled PNG grid (a row per run, a column per prompt)")
    parser.add_argument("--html", type=Path, help="write the same grid as one self-contained HTML page (videos play)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    rows = collect(args.directory)
    if not rows:
        print(f"error: no runs (summary.json) under {args.directory}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if args.contact_sheet:
        count = contact_sheet(args.directory, args.contact_sheet)
        print(f"contact sheet: {count} outputs in {args.contact_sheet}")
    if args.html:
        count = html_report(args.directory, args.html)
        print(f"html report: {count} outputs in {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
