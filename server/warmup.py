"""Serving fast by default: compile the DiT where that restricts nothing, and warm it up before /health says ok.

A compiled DiT traces once per new shape (7-18 s on an H200 for FLUX, Wan, Qwen-Image), so the
first request of each size would pay it. The server runs each ``server.warmup_sizes`` size once,
2 steps (and as a batch of 2 where the server batches that size), before it reports ready.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from sgld.config.conflicts import LORA_SWITCHING, check_conflicts
from sgld.config.schema import RunConfig
from sgld.config.validate import warmup_size_options
from sgld.errors import ConfigError
from sgld.families import OutputKind

from server.engine import within_batch_pixels

log = logging.getLogger("sgld.server")

WARMUP_STEPS = 2  # the first step and a later one: the denoise loop's two paths


def compile_for_serving(run: RunConfig, cuda: Optional[bool] = None) -> RunConfig:
    """Decide ``model.enable_torch_compile`` where the run left it unset (auto); an explicit value stays.

    Auto compiles when serving on a CUDA GPU and nothing else in the run conflicts with it; switchable
    LoRA adapters keep it off (a compiled DiT runs one adapter per request; a fixed set is merged first). ``cuda``: whether the run's
    device is a CUDA GPU (default: resolved from ``run.device``).
    """
    if run.model.enable_torch_compile is not None:
        return run
    if cuda is None:
        from sgld.models.components import resolve_device

        cuda = resolve_device(run.device).type == "cuda"
    decided = copy.deepcopy(run)
    decided.model.enable_torch_compile = True
    reason = None
    if not cuda:
        reason = "not on a CUDA GPU"
    elif LORA_SWITCHING.holds(run):
        reason = "LoRA adapters are switchable (compiled, a request could run only one adapter)"
    else:
        try:
            check_conflicts(decided)
        except ConfigError as exc:
            reason = str(exc)
    if reason:
        decided.model.enable_torch_compile = False
        log.info("torch.compile: off (%s)", reason)
    else:
        log.info("torch.compile: on (serving on a GPU; --no-torch-compile turns it off); warm-up compiles it")
    return decided


def warmup_requests(run: RunConfig) -> list[dict[str, Any]]:
    """The size options of each warm-up run: ``server.warmup_sizes``, else the model's default size when compiled."""
    if run.server.warmup_sizes is not None:
        return [warmup_size_options(size) for size in run.server.warmup_sizes]
    return [{}] if run.model.enable_torch_compile else []


def warm_up(engine: Any, run: RunConfig) -> list[dict[str, Any]]:
    """Run each warm-up size on ``engine`` (``WARMUP_STEPS`` steps, nothing saved); what ran and how long each took.

    A model that transforms an image gets a plain gray one (of the warm-up size; 512² for the default).
    Raises what the engine raises: a size the model refuses, or a compile that fails, must stop the
    server from saying ready.
    """
    from sgld.api import BatchItem

    done = []
    spec = engine.pipeline.spec
    with tempfile.TemporaryDirectory(prefix="sgld-warmup-") as scratch:
        for size in warmup_requests(run):
            options = {"prompt": "warm-up", "seed": 0, "num_inference_steps": WARMUP_STEPS, "save_output": False, **size}
            if spec.needs_image:  # the image is resized to the output size: its own size hardly matters
                options["image_path"] = _gray_image(Path(scratch), size.get("width", 512), size.get("height", 512))
            checked = engine.check(**options)
            label = f"{checked.sampling.width}x{checked.sampling.height}" + (
                f"x{checked.sampling.num_frames}" if spec.output == OutputKind.video else "")
            start = time.perf_counter()
            engine.generate(**options)
            took = {"size": label, "batch": 1, "seconds": round(time.perf_counter() - start, 2)}
            done.append(took)
            log.info("warm-up %s: %.1f s", label, took["seconds"])
            if _batches(engine, run, checked, video=spec.output == OutputKind.video):
                start = time.perf_counter()
                for outcome in engine.generate_batch([BatchItem(dict(options)), BatchItem(dict(options))],
                                                     max_batch_size=2):
                    if isinstance(outcome, Exception):
                        raise outcome
                done.append({"size": label, "batch": 2, "seconds": round(time.perf_counter() - start, 2)})
                log.info("warm-up %s, batch of 2: %.1f s", label, done[-1]["seconds"])
    return done


def _batches(engine: Any, run: RunConfig, checked: RunConfig, video: bool) -> bool:
    """Whether the server would put requests of this size together (then batch sizes past 1 trace once more)."""
    return (run.server.max_batch_size > 1 and engine.batch_limit() > 1
            and within_batch_pixels(checked.sampling, video, run.server.batch_max_pixels))


def _gray_image(folder: Path, width: int, height: int) -> str:
    from PIL import Image

    path = folder / f"gray_{width}x{height}.png"
    if not path.exists():
        Image.new("RGB", (width, height), (128, 128, 128)).save(path)
    return str(path)
