"""Resuming a prompt set: which outputs an earlier run left in the output directory a new run may keep.

The directory's ``config.yaml`` records the run that made its outputs and ``manifest.jsonl`` what each
output was made from. A new run keeps an output only when both say it would make the same one:

- the run-wide settings that shape every output (model, precision, LoRA, sampling defaults, size,
  seed, ...: ``OUTPUT_KEYS``) must equal the recorded run's, or the run is refused with the keys that
  differ: keeping those outputs would leave files the folder's config no longer describes, and making
  them again would silently replace a finished set;
- each item's own effective settings (its prompt-file line on top of the run) must equal its manifest
  record; an item whose line was edited is made again and its superseded file removed once replaced.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from sgld.config.compose import run_config_yaml
from sgld.config.schema import RunConfig
from sgld.errors import UserError

log = logging.getLogger("sgld")

MANIFEST = "manifest.jsonl"
CONFIG = "config.yaml"

# Run-wide keys that change the pixels of every output (lossless speed settings, parallel layout, offload,
# batching and the server section do not). Sampling counts whole, but for what is per item or not output.
OUTPUT_KEYS = {
    "model": ("path", "precision", "text_encoder_precisions", "attention_backend", "quantization",
              "mask_strategy_file_path", "dit_weights", "loras"),
    "cache": None,
    "vae": ("precision", "tiling", "tile_sample_min_height", "tile_sample_min_width"),
    "sampling": None,
    "output": ("num_outputs_per_prompt", "compression", "x264_preset"),
}
# Sampling keys that shape no output's pixels (where the prompts came from, how many ran together).
BOOKKEEPING = ("prompts_file", "batch_size")
# ... and the prompt, which is each item's own: compared per item, not run-wide.
NOT_RUN_SETTINGS = ("prompt", *BOOKKEEPING)


@dataclass
class ResumePlan:
    """What a run keeps: the output indexes already made as asked, and files of items being made again."""

    done: set[int] = field(default_factory=set)
    superseded: dict[int, Path] = field(default_factory=dict)


def output_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``OUTPUT_KEYS`` of a run config (as its YAML reads), flattened to dotted keys."""
    flat = {}
    for section, keys in OUTPUT_KEYS.items():
        values = config.get(section) or {}
        for key in keys or [k for k in values if k not in NOT_RUN_SETTINGS]:
            flat[f"{section}.{key}"] = values.get(key)
    return flat


def records_by_index(manifest: Path) -> dict[int, dict]:
    """The latest manifest record of each output index (a line cut by a crash mid-write is skipped)."""
    records: dict[int, dict] = {}
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                records[record["index"]] = record
    return records


def _describe(config: Mapping[str, Any]) -> str:
    sampling = config.get("sampling") or {}
    size = (f"{sampling.get('width')}x{sampling.get('height')}" if sampling.get("height") is not None
            else "the model's size")
    return f"model {(config.get('model') or {}).get('path')} at {size}"


def check_same_run(out_dir: Path, shown: str, run: RunConfig) -> None:
    """Raise UserError naming every output-shaping setting ``run`` changes from the run recorded in ``out_dir``.

    ``shown``: the directory as the user gave it, for the message.
    """
    recorded_file = out_dir / CONFIG
    redo = "use another --output-path, or --no-resume (output.resume=false) to make every output there again"
    if not recorded_file.is_file():
        raise UserError(f"{shown} holds a {MANIFEST} but no {CONFIG}, so which run made its outputs is unknown: "
                        f"{redo}", param="output_path")
    try:
        recorded = yaml.safe_load(recorded_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        recorded = {}
    new = yaml.safe_load(run_config_yaml(run))
    before, after = output_settings(recorded), output_settings(new)
    changes = [f"{key}={after[key]!r} (was {before.get(key)!r})" for key in after if after[key] != before.get(key)]
    if changes:
        raise UserError(f"{shown} holds a run of {_describe(recorded)}; this run asks for {', '.join(changes)}: "
                        f"{redo}", param="output_path")


def _item_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """An output's settings as the manifest stores them (JSON), without the bookkeeping keys."""
    return {k: v for k, v in json.loads(json.dumps(dict(settings))).items() if k not in BOOKKEEPING}


def plan_resume(run: RunConfig, out_dir: Path, outputs: list[tuple[str, dict]]) -> ResumePlan:
    """Check ``run`` against the run recorded in ``out_dir`` (UserError if it differs) and plan what to keep.

    ``outputs``: (file stem, options) of every output of the set, in index order. An output is kept when
    its latest manifest record is ``ok``, its file still exists, and its recorded settings equal what
    ``run`` makes of its options now; an item made from other settings is made again (logged).
    """
    plan = ResumePlan()
    records = records_by_index(out_dir / MANIFEST)
    if not run.output.resume or not records:
        return plan
    check_same_run(out_dir, run.output.path, run)
    from sgld.api import check_request_options
    from sgld.models.folder_model import FolderModel

    model = FolderModel.of(run.model.path, run.model.download)
    for index, (_, options) in enumerate(outputs):
        record = records.get(index)
        if record is None or record.get("status") != "ok" or not record.get("output"):
            continue
        try:
            expected = _item_settings(asdict(check_request_options(run, model, dict(options)).sampling))
        except UserError:
            continue  # an item the model refuses now is tried (and recorded as failed) again
        recorded = _item_settings(record.get("settings") or {})
        changes = [f"{key} {recorded.get(key)!r} -> {expected[key]!r}" for key in expected
                   if expected[key] != recorded.get(key)]
        old = out_dir / Path(record["output"]).name  # the folder may have moved since
        if changes:
            log.info("output %d changed since it was made (%s): making it again", index, ", ".join(changes))
            if old.is_file():
                plan.superseded[index] = old
        elif old.is_file():
            plan.done.add(index)
    past = sorted(i for i in records if i >= len(outputs))
    if past:
        log.info("%s also holds %d output(s) past this set's %d (indexes %d-%d, from a longer set): left as they are",
                 run.output.path, len(past), len(outputs), past[0], past[-1])
    return plan
