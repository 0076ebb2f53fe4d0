"""Prompt sets: many generations with one loaded model, a manifest per output, resume, a run summary.

A prompt set is a text file (one prompt per line) or JSONL (one object per line with
``prompt`` and any sampling option: ``seed``, ``negative_prompt``, ``height``, ...). Every
item's result is appended to ``manifest.jsonl`` in the output directory as soon as it is
written, so an interrupted run loses at most the item in progress; running the same command
again skips the items the manifest records as done whose files still exist and whose settings are
the ones asked for now (``sgld.resume``: a run with other settings is refused). A failing item is
recorded with its error and the run goes on. ``summary.json`` is rewritten after every item.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sgld.config.compose import run_config_yaml
from sgld.config.options import BY_NAME, SAMPLING
from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.outputs import slug
from sgld.resume import CONFIG, MANIFEST, plan_resume

log = logging.getLogger("sgld")

SUMMARY = "summary.json"


def load_prompt_set(path: str) -> list[dict]:
    """The items of a prompt file: ``[{"prompt": ..., <sampling option>: ...}, ...]``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"prompts file {path!r} does not exist", param="prompts_file")
    items = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if file.suffix != ".jsonl":
            items.append({"prompt": line.strip()})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number} is not valid JSON: {exc.msg}", param="prompts_file") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise UserError(f"{path} line {number} needs a \"prompt\" string", param="prompts_file")
        unknown = [k for k in item if k not in BY_NAME or BY_NAME[k].section != SAMPLING]
        if unknown:
            raise UserError(f"{path} line {number}: {', '.join(map(repr, unknown))} is not a sampling option",
                            param="prompts_file")
        items.append(item)
    if not items:
        raise UserError(f"prompts file {path!r} has no prompts", param="prompts_file")
    return items


def _peak_memory() -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def expand(items: list[dict], per_prompt: int, base_seed: int) -> list[tuple[str, dict]]:
    """(file stem, options) of every output: ``per_prompt`` per item, seeds counting up from the item's."""
    outputs = []
    for i, item in enumerate(items):
        stem = f"{i:04d}_{slug(item['prompt'])[:60]}"
        if per_prompt == 1:
            outputs.append((stem, item))
            continue
        seed = item.get("seed", base_seed)
        outputs.extend((f"{stem}_{k}", {**item, "seed": seed + k}) for k in range(per_prompt))
    return outputs


def _items_of(run: RunConfig) -> list[dict]:
    if run.sampling.prompts_file:
        return load_prompt_set(run.sampling.prompts_file)
    if run.sampling.prompt:
        return [{"prompt": run.sampling.prompt}]
    raise UserError("give --prompt or --prompt-file", param="prompt")


def is_prompt_set(run: RunConfig) -> bool:
    """Whether ``run`` makes several outputs (a prompts file, or several outputs per prompt)."""
    return bool(run.sampling.prompts_file) or run.output.num_outputs_per_prompt > 1


def run_prompt_set(run: RunConfig, items: list[dict] | None = None) -> dict:
    """Generate every output of the prompt set (``items``, or the run's prompts file) into ``run.output.path``."""
    from sgld.api import BatchItem, DiffGenerator
    from sgld.progress import Progress

    if items is None:
        items = _items_of(run)
    outputs = expand(items, run.output.num_outputs_per_prompt, run.sampling.seed)
    out_dir = Path(run.output.path).expanduser().resolve()
    plan = plan_resume(run, out_dir, outputs)  # a run that differs from the recorded one stops here
    done = plan.done
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    if not run.output.resume:
        manifest.write_text("")  # every output is made again: the old records describe nothing that stays
    (out_dir / CONFIG).write_text(run_config_yaml(run))  # the composed run, beside its outputs
    todo = [i for i in range(len(outputs)) if i not in done]
    log.info("%d outputs: %d already done, %d to generate into %s", len(outputs), len(done), len(todo), out_dir)
    summary = {"total": len(outputs), "done": len(done), "failed": 0, "skipped": len(done), "load_seconds": 0.0,
               "seconds": 0.0, "s_per_output": None}
    progress = Progress()
    start = time.perf_counter()
    generator = None
    if todo:
        with progress.stage("load"):
            generator = DiffGenerator.from_run_config(run)
    summary["load_seconds"] = round(time.perf_counter() - start, 3)
    extension = "mp4" if generator is not None and generator.pipeline.spec.output == "video" else "png"
    size = run.sampling.batch_size
    # A terminal gets a bar over the outputs (and one over each batch's steps); a log one line per output.
    bar = progress.bar(total=len(outputs), initial=len(done), desc="prompts", unit="output")
    try:
        for first in range(0, len(todo), size):
            indexes = todo[first : first + size]
            names = {index: f"{outputs[index][0]}.{extension}" for index in indexes}
            items = [BatchItem({"output_path": str(out_dir), "output_file_name": names[index], "save_output": True,
                                **outputs[index][1]}) for index in indexes]
            batch_start = time.perf_counter()
            results = generator.generate_batch(items, progress=progress)
            seconds = round(time.perf_counter() - batch_start, 3)
            for index, result in zip(indexes, results):
                record: dict[str, Any] = {"index": index, "prompt": outputs[index][1]["prompt"]}
                if isinstance(result, UserError):
                    record.update(status="failed", error=str(result), param=result.param)
                    summary["failed"] += 1
                    log.error("prompt %d failed: %s", index, result)
                elif isinstance(result, Exception):
                    raise result  # an engine error stops the run, as it did one output at a time
                else:
                    # ``seconds``: the wall time of the batch this output was made in (of ``batch`` outputs).
                    record.update(status="ok", output=str(result.path), seed=result.seed,
                                  settings=asdict(result.config.sampling), timings=result.timings,
                                  seconds=seconds, batch=len(indexes), peak_memory_bytes=_peak_memory())
                    summary["done"] += 1
                    replaced = plan.superseded.pop(index, None)
                    if replaced is not None and replaced != Path(result.path):
                        replaced.unlink(missing_ok=True)  # the file of the item's earlier settings
                with manifest.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            summary["seconds"] = round(time.perf_counter() - start, 3)
            made = summary["done"] - summary["skipped"]
            # Generation time per new output, the one model load left out.
            summary["s_per_output"] = round((summary["seconds"] - summary["load_seconds"]) / made, 3) if made else None
            (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
            if bar is not None:
                bar.update(len(indexes))
            else:
                for index, result in zip(indexes, results):
                    outcome = "failed" if isinstance(result, Exception) else Path(result.path).name
                    progress.line(f"output {index + 1}/{len(outputs)}: {outcome} ({seconds:.2f} s"
                                  + (f" for a batch of {len(indexes)})" if len(indexes) > 1 else ")"))
    finally:
        if bar is not None:
            bar.close()
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary
