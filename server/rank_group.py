"""The engine of a server that runs its model on several ranks (``serve --num-gpus N``).

It looks like a DiffGenerator to the job service (``check``, ``generate``, ``pipeline``),
but the model lives in N torch.distributed ranks started by torch's elastic launcher from
a background thread here. Requests are validated here from the model folder's configs
(no weights in this process); jobs go to rank 0 and progress, results and errors come back
through multiprocessing queues. If the group fails, the job in flight fails with the
failing rank's message and ``on_failure`` tells the service (``/health`` says so).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from sgld.config.schema import RunConfig
from sgld.errors import UserError
from sgld.models.folder_model import FolderModel
from sgld.parallel.serving import RankLoader

log = logging.getLogger("sgld.server")


@dataclass
class RemoteResult:
    """Rank 0's answer for one job: the saved file, its first frame (for thumbnails) and its stages' seconds."""

    path: Optional[Path]
    frames: Any
    timings: dict = field(default_factory=dict)


class RankGroupEngine:
    """Runs jobs on a group of ranks; one job at a time, like the single-process engine."""

    def __init__(self, run: RunConfig, on_failure: Callable[[str], None], load: RankLoader):
        """``load(run, state)`` loads the model on each rank (importable by name: the ranks are spawned)."""
        import multiprocessing

        self.run = run
        self.pipeline = FolderModel.of(run.model.path, run.model.download)  # checks requests and says the output kind, no weights
        self.pipeline.spec.check_run(run)
        self.load = load
        self.on_failure = on_failure
        context = multiprocessing.get_context("spawn")
        self.jobs, self.events, self.cancel = context.Queue(), context.Queue(), context.Event()
        self.failure: Optional[str] = None
        self._stopping = False  # stop() asked the ranks to exit: the group ending then is no failure
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._launch, name="sgld-rank-group", daemon=True)

    def start(self) -> None:
        """Launch the ranks and wait until every rank has loaded the model."""
        self._thread.start()
        while not self._ready.wait(0.2):
            if self.failure is not None:
                raise RuntimeError(self.failure)
            self._next_event(timeout=0)
            if not self._thread.is_alive() and self.failure is None:
                raise RuntimeError("the rank group exited before it was ready")

    def _launch(self) -> None:
        from sgld.parallel.launch import launch_function
        from sgld.parallel.serving import serve_ranks

        message: Optional[str] = None
        try:
            launch_function(self.run, serve_ranks, self.run, self.load, self.jobs, self.events, self.cancel)
        except UserError as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever ended the group is reported, not raised
            message = f"{type(exc).__name__}: {exc}"
        self.failure = message or "the rank group stopped"
        if message is None and self._stopping:
            log.info("rank group stopped")  # as asked: the server is stopping
            return
        log.error("rank group ended: %s", self.failure)
        self.on_failure(self.failure)

    def _next_event(self, timeout: float):
        """The next event from rank 0 (None after ``timeout``); notes readiness on the way."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if event[0] == "ready":
            self._ready.set()
        return event

    def stop(self, timeout: float = 30) -> None:
        """Ask the ranks to exit after the current job; wait up to ``timeout`` seconds for the group to end.

        Waiting lets torch's launcher return and close its rendezvous store: a process that exits while the
        launcher's thread still runs aborts in C++ teardown ("terminate called without an active exception").
        """
        from sgld.parallel.serving import STOP

        if self.failure is None:
            self._stopping = True
            self.jobs.put(STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def loaded_loras(self) -> list[str]:
        """Unknown here: the adapters live in the ranks."""
        return []

    def lora_control(self, action: str, **kwargs: Any) -> Any:
        """SGLang's LoRA control, run by every rank between jobs (rank 0 answers); its UserError as a UserError."""
        from sgld.parallel.serving import CONTROL

        if self.failure is not None:
            raise RuntimeError(f"the model's rank group has failed: {self.failure}")
        self.jobs.put((CONTROL, action, kwargs))
        while True:
            event = self._next_event(timeout=0.5)
            if event is None:
                if self.failure is not None:
                    raise RuntimeError(f"the model's rank group failed: {self.failure}")
                continue
            if event[0] == "controlled":
                return event[1]
            if event[0] == "error":
                raise UserError(event[1])

    def batch_limit(self) -> int:
        """One sample at a time: rank 0 takes one job per message."""
        return 1

    def generate_batch(self, items: list, *, loras: Optional[list[dict[str, Any]]] = None,
                       max_batch_size: Optional[int] = None) -> list:
        """The items one after another on the group; each item's outcome (result or exception)."""
        outcomes: list = []
        extra = {} if loras is None else {"loras": loras}
        for item in items:
            try:
                outcomes.append(self.generate(step_callback=item.step_callback, **item.options, **extra))
            except Exception as exc:  # noqa: BLE001 - the item's outcome; the service decides what it means
                outcomes.append(exc)
        return outcomes

    def check(self, **options: Any) -> RunConfig:
        """Validate a request from the model folder's configs, as the ranks will."""
        from sgld.api import check_request_options

        return check_request_options(self.run, self.pipeline, options)

    def generate(self, step_callback: Optional[Callable[[int, int], None]] = None, **options: Any) -> RemoteResult:
        """Run one job on the group; raises what the job service expects (its cancel error, RuntimeError, UserError)."""
        if self.failure is not None:
            raise RuntimeError(f"the model's rank group has failed: {self.failure}")
        self.cancel.clear()
        self.jobs.put({k: v for k, v in options.items() if not callable(v)})
        cancelled: Optional[BaseException] = None
        while True:
            event = self._next_event(timeout=0.5)
            if event is None:
                if self.failure is not None:
                    raise RuntimeError(f"the model's rank group failed during the job: {self.failure}")
                continue
            kind = event[0]
            if kind == "progress" and step_callback is not None and cancelled is None:
                try:
                    step_callback(event[1], event[2])
                except Exception as exc:  # noqa: BLE001 - the service's cancel signal: stop the ranks, re-raise after
                    cancelled = exc
                    self.cancel.set()
            elif kind == "cancelled":
                raise cancelled if cancelled is not None else RuntimeError("the job was stopped")
            elif kind == "error":
                raise UserError(event[1])
            elif kind == "done":
                if cancelled is not None:
                    raise cancelled
                return RemoteResult(Path(event[1]) if event[1] else None, event[2], event[3])
