"""DiffGenerator: the Python API that both front doors and the server use."""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from sgld.config.cache import uses_cache_dit, uses_step_cache, uses_teacache
from sgld.config.compose import with_values
from sgld.config.options import OUTPUT, SAMPLING, options_to_values
from sgld.config.schema import AudioOutput, RunConfig
from sgld.errors import UserError
from sgld.families import DescribedModel, OutputKind
from sgld.cache_support import check_family
from sgld.request import Request, StepCallback
from sgld.run_config import run_config_from_options

if TYPE_CHECKING:
    from sgld.models.lora_control import LoraControl
    from sgld.parallel.state import ParallelState
    from sgld.pipelines.base import Pipeline
    from sgld.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class BatchItem:
    """One output of ``generate_batch``: its options by name, and its own progress callback and stop check."""

    options: dict[str, Any]
    step_callback: Optional[StepCallback] = None
    stop_check: Optional[Callable[[], bool]] = None


@dataclass
class GenerationResult:
    """What one generation produced."""

    prompt: str
    seed: int
    # numpy uint8 (frames, height, width, 3); images have one frame. None unless return_frames.
    frames: Optional[np.ndarray]
    # The saved file, or None when saving was off.
    path: Optional[Path]
    timings: dict = field(default_factory=dict)
    config: Optional[RunConfig] = None
    # What a step cache did: kind, forwards computed and served from the cache per branch (None: no cache ran).
    step_cache: Optional[dict] = None
    # The frame rate of the frames (after frame interpolation: 2**exp x the request's).
    fps: Optional[int] = None
    # Models with sound (LTX-2): float32 (channels, samples) in [-1, 1], None unless return_frames; its rate
    # and channel count (set whenever the model made sound); the WAV written beside the video (output.audio=wav).
    audio: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None
    audio_channels: Optional[int] = None
    audio_path: Optional[Path] = None


def quiet_library_logs() -> None:
    """Keep diffusers/transformers to errors and drop their loading progress bars."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def check_request_options(run: RunConfig, model: DescribedModel, options: dict[str, Any]) -> RunConfig:
    """``run`` with per-call sampling/output ``options`` applied, validated against ``model``.

    ``model``: a loaded Pipeline, or the FolderModel of a server whose model runs on other processes.
    """
    from sgld.outputs import check_output_file_name

    request_run = with_values(run, options_to_values(options, sections=(SAMPLING, OUTPUT)))
    req = Request.from_sampling(request_run.sampling)
    model.check_request(req)
    model.spec.check_loaded(req, run)  # the engine's run: what it loaded, not what this request would
    check_family(model.spec.name, uses_cache_dit(request_run), uses_teacache(request_run))
    if request_run.finishing.enable_frame_interpolation or request_run.finishing.enable_upscaling:
        from sgld.finishing.apply import check_weights

        check_weights(request_run.finishing, model.spec.output == OutputKind.video, request_run.model.download)
    model.spec.check_output(request_run.output)
    # A size the model takes from the input image (HunyuanVideo-1.5 I2V) is known now: the run says it.
    request_run.sampling.height, request_run.sampling.width = req.height, req.width
    if request_run.output.save and request_run.output.file_name:
        check_output_file_name(request_run.output.file_name, model.spec.output)
    return request_run


def _progress(progress: "bool | Progress") -> "Optional[Progress]":
    """The Progress a ``progress`` argument asks for: the given one, a new one on stderr (True), or None."""
    if progress is False or progress is None:
        return None
    from sgld.progress import Progress

    return progress if isinstance(progress, Progress) else Progress()


class DiffGenerator:
    """A loaded model, ready to generate many times with per-call sampling settings."""

    def __init__(self, run: RunConfig, pipeline: "Pipeline", parallel: "ParallelState"):
        self.run = run
        self._pipeline: "Optional[Pipeline]" = pipeline
        self.parallel = parallel

    @property
    def pipeline(self) -> "Pipeline":
        """The loaded pipeline (a RuntimeError once ``close`` released it)."""
        if self._pipeline is None:
            raise RuntimeError("this DiffGenerator was closed: load the model again (DiffGenerator.from_pretrained)")
        return self._pipeline

    def close(self) -> None:
        """Release the model now: its weights leave the GPU and host memory on return, not whenever the garbage
        collector next runs (the pipeline's hooks and stages hold it in reference cycles, so ``del`` alone leaves
        it allocated). The generator cannot generate afterwards; closing twice is harmless."""
        import gc

        import torch

        if self._pipeline is None:
            return
        self.stop()
        self._pipeline.components.clear()
        self._pipeline = None
        self.__dict__.pop("_lora_control", None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> "DiffGenerator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_pretrained(cls, model_path: str, **server_args: Any) -> "DiffGenerator":
        """Load ``model_path`` with SGLang-style options (``num_gpus``, ``precision``, ...).

        Sampling options given here (``height``, ``seed``...) become this generator's defaults.
        """
        run = run_config_from_options({"model_path": model_path, **server_args})
        return cls.from_run_config(run)

    @classmethod
    def from_run_config(cls, run: RunConfig, parallel: "Optional[ParallelState]" = None) -> "DiffGenerator":
        """Load the model a validated RunConfig names; ``parallel``: this rank's state in a multi-process run."""
        from sgld.diffusers_patches import apply_diffusers_patches
        from sgld.families import family_of_index
        from sgld.models.components import load_components, resolve_device
        from sgld.models.memory_plan import place_for_load
        from sgld.models.registry import read_model_index, resolve_model_folder
        from sgld.parallel.state import single_process

        quiet_library_logs()
        if run.parallel.num_gpus > 1 and (parallel is None or parallel.world_size == 1):
            raise UserError("parallel.num_gpus > 1: start the run with sgl-diffusion / python -m sgld.generate "
                            "(they launch the ranks) or under torchrun", param="num_gpus")
        state = parallel or single_process(resolve_device(run.device))
        device = state.device
        folder = resolve_model_folder(run.model.path, run.model.download)
        spec = family_of_index(read_model_index(folder), str(folder))
        spec.check_run(run, folder)  # before any weights load
        run, memory = place_for_load(run, folder, device)  # the memory plan decides the placement left unset
        apply_diffusers_patches()
        components = load_components(folder, run, device, skip=spec.unloaded_components(run))
        pipeline = spec.pipeline_class()(components, run, device, state)
        pipeline.memory = memory
        pipeline.finish_setup(folder)  # LoRA adapters, then compile
        if state.tp_degree > 1:
            from sgld.parallel.tensor import shard_text_encoders

            shard_text_encoders(components, state.tp_mesh, state.is_main)
        if state.sp_degree > 1:
            from sgld.parallel.sequence import enable_sequence_parallel

            for module in pipeline.dits.values():  # every DiT it configured: Wan2.2 experts, H3 partitions
                enable_sequence_parallel(module, state)
        log.info("loaded %s (%s) on %s%s", run.model.name, folder, device,
                 f" (rank {state.rank} of {state.world_size})" if state.world_size > 1 else "")
        return cls(run, pipeline, state)

    def use_loras(self, loras: Optional[list[dict[str, Any]]]) -> None:
        """Activate a request's adapters (None: the run's own); loads what is missing, before any denoise work."""
        from sgld.models.lora import request_adapters

        if loras is None and self.pipeline.loras is None:
            return
        adapters = self.pipeline.defaults if loras is None else request_adapters(loras, self.run.server.lora_dir)
        if self.pipeline.loras is None and not adapters:
            return  # an explicit empty set on a model without adapters
        if self.pipeline.loras is None:
            raise UserError("this model was loaded without LoRA support: give --lora-path or --lora-dir", param="loras")
        self.pipeline.loras.apply(adapters)

    def loaded_loras(self) -> list[str]:
        """Names of the LoRA adapters loaded now, least recently used first."""
        return [] if self.pipeline.loras is None else [a.name for a in self.pipeline.loras.loaded.values()]

    @functools.cached_property
    def _lora_control(self) -> "LoraControl":
        from sgld.models.lora_control import LoraControl

        return LoraControl(self.pipeline, self.run)

    def lora_control(self, action: str, **kwargs: Any) -> Any:
        """SGLang's run-time LoRA control (sgld.models.lora_control): ``set`` the default adapters by nickname
        (``requests``), ``switch`` DiTs' adapters on or off (``targets``, ``on``, ``strength``), ``state``."""
        if action not in ("set", "switch", "state"):
            raise ValueError(f"unknown LoRA control action {action!r}")
        return getattr(self._lora_control, action)(**kwargs)

    def set_lora_merged(self, merged: bool) -> None:
        """Fuse the active adapters into the weights (merged) or keep them as separate layers (dynamic)."""
        if self.pipeline.loras is None:
            raise UserError("no LoRA adapters are loaded: give --lora-path or --lora-dir", param="loras")
        self.pipeline.loras.set_merged(merged)

    def stop(self) -> None:
        """Nothing to release: the model lives in this process (a server's multi-rank engine ends its ranks here)."""

    def check(self, **options: Any) -> RunConfig:
        """Validate a request against the config and the model without running it."""
        return check_request_options(self.run, self.pipeline, options)

    def generate(
        self,
        prompt: Optional[str] = None,
        *,
        step_callback: Optional[StepCallback] = None,
        stop_check: Optional[Callable[[], bool]] = None,
        progress: "bool | Progress" = False,
        loras: Optional[list[dict[str, Any]]] = None,
        **options: Any,
    ) -> GenerationResult:
        """Generate one video/image. ``options`` are sampling and output options by name.

        ``progress``: show each stage on stderr (True), or on a given ``sgld.progress.Progress``
        (the CLI's, which showed the load too).

        ``stop_check`` is asked after every denoise step; True raises GenerationStopped. ``loras``
        (``[{"name", "scale", "target"}]``, names inside ``server.lora_dir``) replaces the run's own
        adapters for this request; None keeps them.
        """
        if prompt is not None:
            options["prompt"] = prompt
        run = self.check(**options)
        self.use_loras(loras)
        req = Request.from_sampling(run.sampling, step_callback=step_callback, stop_check=stop_check)
        shown = _progress(progress)
        with self._stages_shown(shown, [req]):
            req = self.pipeline(req)
        return self._result(req, run, shown if self.parallel.is_main else None)

    def generate_batch(self, items: list[BatchItem], *, loras: Optional[list[dict[str, Any]]] = None,
                       progress: "bool | Progress" = False,
                       max_batch_size: Optional[int] = None) -> list[GenerationResult | Exception]:
        """Generate several outputs, sharing forwards among items that can (same size, steps, scheduler).

        Each item is checked first: one that fails its check gets its UserError and never enters a
        batch. Items are grouped by the family's batch key in order and each group runs as batches of
        at most ``max_batch_size`` (default: all of it; 1 where the run has a step cache). Each output
        equals the one its item gets alone. The result list follows ``items``: a GenerationResult, or
        the exception that ended that item (its callback's, GenerationStopped, an OSError writing it);
        an error of the engine itself (not of one item) is the outcome of every item of its batch.
        """
        outcomes: list[GenerationResult | Exception | None] = [None] * len(items)
        groups: dict[tuple, list[tuple[int, Request, RunConfig]]] = {}
        for index, item in enumerate(items):
            try:
                run = self.check(**item.options)
                req = Request.from_sampling(run.sampling, step_callback=item.step_callback, stop_check=item.stop_check)
                # A step cache decides per forward for the whole batch: a request using one runs alone.
                key = (self.pipeline.spec.batch_key(req), uses_step_cache(run))
            except UserError as exc:
                outcomes[index] = exc
                continue
            groups.setdefault(key, []).append((index, req, run))
        if groups:
            self.use_loras(loras)
        limit = max_batch_size or len(items)
        if not self.pipeline.batchable:
            limit = 1
        for (_, cached), group in groups.items():
            size = 1 if cached else limit
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                reqs = [req for _, req, _ in chunk]
                try:
                    with self._steps_bar(_progress(progress), reqs):
                        self.pipeline.run_batch(reqs)
                except Exception as exc:  # noqa: BLE001 - an engine error fails the chunk's items, the others go on
                    for index, _, _ in chunk:
                        outcomes[index] = exc
                    continue
                for index, req, run in chunk:
                    if req.error is not None:
                        outcomes[index] = req.error
                        continue
                    try:
                        outcomes[index] = self._result(req, run)
                    except OSError as exc:
                        outcomes[index] = exc
        return outcomes  # type: ignore[return-value]

    def batch_limit(self) -> int:
        """Most samples one forward may hold: no limit of its own, 1 where a step cache keeps requests apart."""
        return sys.maxsize if self.pipeline.batchable else 1

    @contextmanager
    def _stages_shown(self, progress: Optional["Progress"], reqs: list[Request]):
        """Each pipeline stage as a ``progress`` stage (main rank only); the first request's steps feed the running one.

        The stages are wrapped from here, for this call only, so the pipelines and stages stay unaware of display.
        """
        if progress is None or not self.parallel.is_main:
            yield
            return
        running: list = []
        first = reqs[0]
        own = first.step_callback

        def callback(done: int, total: int) -> None:
            if running:
                running[-1].step(done, total)
            if own is not None:
                own(done, total)

        def shown(stage, run_batch):
            def run(batch):
                with progress.stage(stage.name) as item:
                    running.append(item)
                    try:
                        return run_batch(batch)
                    finally:
                        running.pop()
            return run

        first.step_callback = callback
        wrapped = [stage for stage in self.pipeline.stages if "run_batch" not in vars(stage)]
        for stage in wrapped:
            stage.run_batch = shown(stage, stage.run_batch)
        try:
            yield
        finally:
            for stage in wrapped:
                del stage.run_batch  # the class's method again
            first.step_callback = own

    @contextmanager
    def _steps_bar(self, progress: Optional["Progress"], reqs: list[Request]):
        """A passing tqdm bar over one batch's denoise steps on a terminal (prompt sets: their own bar stays)."""
        bar = progress.bar(total=reqs[0].num_inference_steps, unit="step", leave=False,
                           desc="denoise" if len(reqs) == 1 else f"denoise x{len(reqs)}") \
            if progress is not None and self.parallel.is_main else None
        if bar is None:
            yield
            return
        first = reqs[0]
        own = first.step_callback

        def callback(done: int, total: int) -> None:
            if done == 0:
                bar.reset(total=total)  # time the steps, not the stages before the loop
            else:
                bar.update(done - bar.n)
            if own is not None:
                own(done, total)

        first.step_callback = callback
        try:
            yield
        finally:
            bar.close()
            first.step_callback = own

    def _result(self, req: Request, run: RunConfig, progress: Optional["Progress"] = None) -> GenerationResult:
        if self.parallel.is_main and req.frames is not None and (
                run.finishing.enable_frame_interpolation or run.finishing.enable_upscaling):
            self._finish(req, run)
        path = audio_path = None
        if run.output.save and self.parallel.is_main:  # every rank holds the frames; one writes them
            if progress is None:
                path, audio_path = self.save(req, run)
            else:
                with progress.stage("save"):
                    path, audio_path = self.save(req, run)
        wave = req.waveform
        return GenerationResult(
            prompt=req.prompt,
            seed=req.seed,
            frames=req.frames if run.output.return_frames else None,
            path=path,
            timings=dict(req.timings),
            step_cache=req.step_cache,
            fps=req.fps,
            config=run,
            audio=wave if run.output.return_frames else None,
            sample_rate=req.sample_rate,
            audio_channels=None if wave is None else int(wave.shape[0]),
            audio_path=audio_path,
        )

    def _finish(self, req: Request, run: RunConfig) -> None:
        """The request's finishing (frame interpolation, upscaling) of its decoded frames; the fps follows."""
        from sgld.finishing.apply import finish

        video = self.pipeline.spec.output == OutputKind.video
        req.frames, req.fps = finish(req.frames, req.fps, run.finishing, video, self.pipeline.device,
                                     run.model.download, req.timings, compile=bool(run.model.enable_torch_compile))

    def save(self, req: Request, run: RunConfig) -> tuple[Path, Optional[Path]]:
        """Write the request's frames (and sound, as ``output.audio`` says) under ``run.output.path``; the file
        written and the WAV beside it (or None)."""
        import time

        from sgld.outputs import audio_file_for, output_path, save_image, save_video, save_video_with_audio, save_wav

        kind = self.pipeline.spec.output
        path = output_path(run.output.path, run.output.file_name, req.prompt, req.seed, kind)
        if kind != OutputKind.video:
            return save_image(req.frames[0], path, run.output.compression), None
        if req.waveform is None or run.output.audio == AudioOutput.none:
            return save_video(req.frames, path, req.fps, run.output.compression, run.output.x264_preset), None
        start = time.perf_counter()
        save_video_with_audio(req.frames, path, req.fps, req.waveform, req.sample_rate)
        wav = save_wav(req.waveform, audio_file_for(path), req.sample_rate) if run.output.audio == AudioOutput.wav \
            else None
        req.timings["mux"] = time.perf_counter() - start
        return path, wav
