"""What a run is doing, stage by stage, on stderr: tqdm lines on a terminal, one plain line per stage otherwise.

On a terminal each stage (load, encode_prompt, denoise, decode, save, ...) gets a line that stays:
its elapsed time counts up while it runs (a 12 s VAE decode is visibly busy) and the denoise line
becomes a step bar. Without a terminal (a log file, CI, a pipe) redrawn bars are noise, so each
stage writes one line when it ends: ``decode: 0.38 s``, ``denoise: 50 steps in 41.20 s (0.824 s/step)``.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, TextIO

# A stage line's look on a terminal: running (elapsed ticking), and once it has steps, a bar.
_RUNNING = "{desc}: {elapsed}"
_STEPS = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


class StageProgress:
    """One running stage: ``step(done, total)`` turns it into a step bar (the denoise loop's callback)."""

    def __init__(self, name: str, bar: Any = None):
        self.name = name
        self.bar = bar  # the tqdm line on a terminal, else None
        self.steps: Optional[int] = None
        self.start = time.perf_counter()

    def step(self, done: int, total: int) -> None:
        """``done`` of ``total`` steps finished; step 0 (the loop starting) times the steps, not what came before."""
        self.steps = total
        if self.bar is None:
            return
        if done == 0 or self.bar.total != total:
            self.bar.bar_format = _STEPS
            self.bar.reset(total=total)
        else:
            self.bar.update(done - self.bar.n)


class Progress:
    """Stage-by-stage progress written to ``stream`` (stderr): tqdm on a terminal, one line per stage otherwise."""

    def __init__(self, stream: Optional[TextIO] = None, terminal: Optional[bool] = None, refresh_s: float = 0.5):
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)()) if terminal is None else terminal
        self.refresh_s = refresh_s

    @contextmanager
    def stage(self, name: str) -> Iterator[StageProgress]:
        """Show stage ``name`` while the block runs; its line stays with the time it took (nothing if it raises)."""
        stage = StageProgress(name, self._bar(name) if self.terminal else None)
        stop = threading.Event()
        ticker = None
        if stage.bar is not None:  # tqdm redraws only on updates: redraw a long stage's clock from a side thread
            ticker = threading.Thread(target=self._tick, args=(stage.bar, stop), daemon=True)
            ticker.start()
        ok = False
        try:
            with _logs_above_the_bars(stage.bar is not None):
                yield stage
            ok = True
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            seconds = time.perf_counter() - stage.start
            if stage.bar is not None:
                if ok and stage.steps is None:
                    stage.bar.bar_format = f"{{desc}}: {seconds:.2f} s"
                stage.bar.refresh()
                stage.bar.close()
            elif ok:
                self.line(_summary(stage, seconds))

    def line(self, text: str) -> None:
        """One line of text, between the bars on a terminal."""
        if self.terminal:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def bar(self, **kwargs: Any) -> Any:
        """A tqdm bar on a terminal (``leave``, ``total``, ``desc``... as tqdm takes them), else None."""
        if not self.terminal:
            return None
        from tqdm import tqdm

        # The terminal's size, 80x24 where it reports none (a pty without a size): tqdm would hide every bar.
        size = shutil.get_terminal_size((80, 24))
        return tqdm(file=self.stream, ncols=size.columns, nrows=size.lines, **kwargs)

    def _bar(self, name: str) -> Any:
        return self.bar(desc=name, total=None, bar_format=_RUNNING, unit="step", leave=True)

    def _tick(self, bar: Any, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_s):
            bar.refresh()


@contextmanager
def _logs_above_the_bars(on: bool) -> Iterator[None]:
    """On a terminal, log lines (the load's "loaded ...") go out through tqdm, above the running line, not into it."""
    if not on:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def _summary(stage: StageProgress, seconds: float) -> str:
    if stage.steps:
        return f"{stage.name}: {stage.steps} steps in {seconds:.2f} s ({seconds / stage.steps:.3f} s/step)"
    return f"{stage.name}: {seconds:.2f} s"
