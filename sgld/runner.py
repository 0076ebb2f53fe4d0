"""Run one composed RunConfig: the body shared by ``sgl-diffusion generate`` and ``sgld.generate``."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Optional

from sgld.api import DiffGenerator, GenerationResult
from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.folder_model import FolderModel
from sgld.request import Request

if TYPE_CHECKING:
    from sgld.parallel.state import ParallelState

log = logging.getLogger("sgld")


def check_generate_run(run: RunConfig) -> None:
    """Settings that only ``serve`` takes: data-parallel engine workers."""
    if run.parallel.dp_size > 1:
        raise UserError(f"dp_size={run.parallel.dp_size}: data-parallel engine workers are for `serve` (they share "
                        "its queue); one generation uses all --num-gpus through --sp-size/--ulysses-degree/"
                        "--ring-degree/--enable-cfg-parallel", param="dp_size")


def check_model_folder(run: RunConfig) -> FolderModel:
    """Resolve the model folder (building a tiny model if needed); its family's checks of ``run``'s settings."""
    model = FolderModel.of(run.model.path, run.model.download)
    model.spec.check_run(run, model.folder)
    return model


def check_before_loading(run: RunConfig) -> None:
    """Validate the settings and the request against the model's configs before any weights load."""
    from sgld.outputs import check_output_file_name

    model = check_model_folder(run)
    model.check_request(Request.from_sampling(run.sampling))
    from sgld.models.memory_plan import check_run_fits

    check_run_fits(run, model.folder)  # on a GPU: a size whose activations fit no placement, before any weights load
    if run.output.save and run.output.file_name:
        check_output_file_name(run.output.file_name, model.spec.output)


def fetch_input_urls(run: RunConfig, items: list[dict] | None = None) -> None:
    """Replace input images named by URL (``--image-path https://...``, and prompt-set items') with local copies
    under ``$SGLD_HOME/url-inputs``, fetched under sgld.url_inputs' rules."""
    from sgld.model_builders.tiny import sgld_home
    from sgld.url_inputs import localize_image_urls

    fetch = dict(max_bytes=run.server.max_body_mb * 1024 * 1024, allow_private=run.server.allow_private_urls,
                 folder=sgld_home() / "url-inputs")
    if run.sampling.image_path:
        run.sampling.image_path = localize_image_urls(run.sampling.image_path, **fetch)
    for item in items or ():
        if isinstance(item, dict) and item.get("image_path"):
            item["image_path"] = localize_image_urls(item["image_path"], **fetch)


def run_generation(run: RunConfig) -> GenerationResult:
    """Generate ``run.sampling`` on one process, or on ``parallel.num_gpus`` ranks through torchrun."""
    if run.sampling.prompts_file or run.output.num_outputs_per_prompt > 1:
        raise UserError("run_generation makes one output; prompt sets go through run_prompt_set", param="prompts_file")
    check_generate_run(run)
    fetch_input_urls(run)
    if run.parallel.num_gpus == 1:
        return run_local(run)
    from sgld.parallel.launch import launch, run_as_rank
    from sgld.parallel.state import in_torchrun

    if in_torchrun():  # started by torchrun / srun: this process is one rank
        return run_as_rank(run, run_local)
    check_before_loading(run)  # bad input fails here, before any process starts
    return launch(run, run_local)


def run_prompt_set(run: RunConfig, items: list[dict] | None = None) -> dict:
    """Generate a prompt set (``items``, else ``sampling.prompts_file``) with one loaded model; the run summary."""
    from sgld.batch import run_prompt_set as run_set

    if run.parallel.num_gpus > 1:
        raise UserError("prompt sets run on one process for now; use --num-gpus 1", param="num_gpus")
    fetch_input_urls(run, items)
    return run_set(run, items)


def run_local(run: RunConfig, parallel: "Optional[ParallelState]" = None) -> GenerationResult:
    """Load the model, generate ``run.sampling`` showing each stage (sgld.progress), save per ``run.output``.

    ``parallel``: this rank's state when the run is one rank of a group (``launch`` passes it).
    """
    from sgld.progress import Progress

    check_before_loading(run)
    main = parallel is None or parallel.is_main
    progress = Progress() if main else None  # only rank 0 shows progress
    start = time.perf_counter()
    with progress.stage("load") if progress is not None else nullcontext():
        generator = DiffGenerator.from_run_config(run, parallel)
    load_s = time.perf_counter() - start
    result = generator.generate(progress=progress or False)
    result.timings = {"load": load_s, **result.timings}
    return result


def describe_timings(result: GenerationResult) -> str:
    """``load 1.20s; encode_prompt 0.05s, denoise 3.10s, ...`` — the launcher prints rank 0's after a parallel run too."""
    timings = dict(result.timings)
    load = timings.pop("load", None)
    stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items())
    return f"load {load:.2f}s; {stages}" if load is not None else stages
