"""``python -m sgld.report DIR``: a table across the runs under DIR (a prompt-set run, or a Hydra sweep).

Every directory holding a ``summary.json`` is one row: its Hydra overrides (from
``.hydra/overrides.yaml`` when present), outputs done/failed, model load time, s/output and
peak GPU memory from its manifest. ``--markdown FILE`` / ``--csv FILE`` write the table;
``--contact-sheet FILE.png`` puts the first frame of every output on one image.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

COLUMNS = ("run", "settings", "done", "failed", "total", "load_s", "s_per_output", "peak_mem_gib")


def collect(root: Path) -> list[dict]:
    """One row per run directory under ``root`` (sorted by path)."""
    rows = []
    for summary_file in sorted(root.rglob("summary.json")):
        run_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
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


def contact_sheet(root: Path, path: Path, cell: int = 160) -> int:
    """First frame of every output under ``root``, in a grid; the number of tiles."""
    from PIL import Image

    frames = []
    for manifest in sorted(root.rglob("manifest.jsonl")):
        for line in manifest.read_text().splitlines():
            record = json.loads(line)
            if record.get("status") == "ok" and Path(record["output"]).is_file():
                frames.append(_first_frame(Path(record["output"])))
    if not frames:
        return 0
    columns = min(len(frames), 6)
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, frame in enumerate(frames):
        frame.thumbnail((cell, cell))
        sheet.paste(frame, ((i % columns) * cell, (i // columns) * cell))
    sheet.save(path)
    return len(frames)


def _first_frame(path: Path):
    from PIL import Image

    if path.suffix == ".mp4":
        import imageio_ffmpeg
        import numpy as np

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frame = np.frombuffer(next(reader), dtype=np.uint8).reshape(height, width, 3)
        reader.close()
        return Image.fromarray(frame)
    with Image.open(path) as image:
        return image.convert("RGB")


def main(argv: list[str] | None = None) -> int:
    """Print the table; write the files asked for."""
    parser = argparse.ArgumentParser(prog="python -m sgld.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--csv", type=Path, help="write the table as CSV")
    parser.add_argument("--contact-sheet", type=Path, help="write the first frame of every output as one PNG")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
