"""What the job service asks of an engine, and how the server gets one.

Two engines fit: a DiffGenerator (the model in this process) and a RankGroupEngine (the model
in N ranks, this process holding only its folder's description). Tests hand ``create_app`` an
engine, or a loader that builds one (fault injection wraps the real engine there).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from sgld.config.schema import RunConfig
from sgld.families import DescribedModel


class Engine(Protocol):
    """A loaded model the worker runs jobs on, one at a time."""

    run: RunConfig

    @property
    def pipeline(self) -> DescribedModel:
        """The model's family, size constraints and request check (no weights needed)."""

    def check(self, **options: Any) -> RunConfig:
        """Validate a request without running it; the request's RunConfig."""

    def generate(self, *, step_callback: Optional[Callable[[int, int], None]] = None, **options: Any) -> Any:
        """Run one request; a result with ``path`` and ``frames``."""

    def generate_batch(self, items: list, *, loras: Optional[list[dict[str, Any]]] = None,
                       max_batch_size: Optional[int] = None) -> list:
        """Run several outputs (``sgld.api.BatchItem``), sharing forwards where the engine can; an outcome per item."""

    def batch_limit(self) -> int:
        """Most samples this engine runs in one forward (1: one at a time)."""

    def stop(self) -> None:
        """Release what the engine holds (a rank group's processes)."""

    def loaded_loras(self) -> list[str]:
        """Names of the LoRA adapters loaded now (empty where the engine cannot tell)."""

    def lora_control(self, action: str, **kwargs: Any) -> Any:
        """SGLang's LoRA control: ``set`` the default adapters, ``switch`` them on or off, ``state`` (DiffGenerator's)."""


class FolderCheck:
    """What requests are checked against while the engine loads: the model folder's description (its family,
    size constraints and request check, read from JSON; no weights), as a rank group's front checks them. A
    request checked here is queued and runs once the engine is ready."""

    def __init__(self, run: RunConfig, folder_model: DescribedModel):
        self.run = run
        self.pipeline = folder_model

    def check(self, **options: Any) -> RunConfig:
        """Validate a request against the config and the model folder without running it."""
        from sgld.api import check_request_options

        return check_request_options(self.run, self.pipeline, options)

    def batch_limit(self) -> int:
        """No limit of its own (the loaded engine's decides when the batch runs)."""
        import sys

        return sys.maxsize


# (run, on_failure) -> a ready Engine. on_failure(message) reports an engine that dies after loading.
EngineLoader = Callable[[RunConfig, Callable[[str], None]], Engine]


def load_engine(run: RunConfig, on_failure: Callable[[str], None]) -> Engine:
    """The engine ``run`` asks for: in this process, or on ``parallel.num_gpus`` ranks."""
    from sgld.api import DiffGenerator

    if run.parallel.num_gpus > 1:
        from server.rank_group import RankGroupEngine

        engine = RankGroupEngine(run, on_failure, load=DiffGenerator.from_run_config)
        engine.start()
        return engine
    return DiffGenerator.from_run_config(run)


def within_batch_pixels(sampling: Any, video: bool, batch_max_pixels: int) -> bool:
    """Whether a sample of this size may share a forward with others: width x height (x frames for video) within
    ``server.batch_max_pixels`` (a larger one already fills the GPU alone)."""
    frames = sampling.num_frames if video else 1
    return sampling.width * sampling.height * frames <= batch_max_pixels
