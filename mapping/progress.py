"""Progress on the terminal for anything that takes more than a few seconds.

A spinner with the elapsed time (:func:`status`) or a bar with an estimate of the time left
(:class:`Bar`), on stderr and only when stderr is a terminal: pipes, logs and ``--json`` runs
stay quiet (``TESSERA_QUIET=1`` or :func:`quiet` silences them too).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["Bar", "RunProgress", "enabled", "quiet", "status"]

_QUIET = False


def quiet(on: bool = True) -> None:
    """Silence (or allow again) every progress display of this process."""
    global _QUIET
    _QUIET = on


def enabled() -> bool:
    """Whether displays show: stderr is a terminal and nobody asked for quiet."""
    return not _QUIET and not os.environ.get("TESSERA_QUIET") and sys.stderr.isatty()


@contextlib.contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner with ``message`` and the elapsed time while the body runs; yields an object
    whose ``update(text)`` changes the message (a no-op when displays are off)."""
    if not enabled():
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task(message, total=None)
        yield _Updater(progress, task)


class _Silent:
    def update(self, text: str) -> None:
        pass

    def advance(self, n: float = 1) -> None:
        pass


class _Updater:
    def __init__(self, progress: Any, task: Any):
        self.progress, self.task = progress, task

    def update(self, text: str) -> None:
        self.progress.update(self.task, description=text)


class Bar:
    """A bar over ``total`` units (points, cycles, ops) with the time left, as a context
    manager: ``with Bar(n, "mapping") as bar: ... bar.advance()``."""

    def __init__(self, total: float, description: str, *, completed: float = 0):
        self.total, self.description, self.completed = total, description, completed
        self._progress = None

    def __enter__(self) -> Bar:
        if enabled():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=Console(stderr=True),
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total,
                                                 completed=self.completed)
        return self

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class RunProgress:
    """The display of an RTL run: a spinner while the simulator builds, then cycles simulated
    against the cycle model's prediction with the time left; call the object as the
    ``progress(job, cycles, predicted)`` callback of :func:`sim.cosim.run_programs`."""

    def __init__(self, what: str):
        self.what = what
        self._status = None
        self._start: tuple[float, int] | None = None

    def __enter__(self) -> RunProgress:
        self._context = status(f"{self.what}: building or reusing the simulator...")
        self._status = self._context.__enter__()
        return self

    def __call__(self, job: int, cycles: int, predicted: int) -> None:
        import time

        now = time.monotonic()
        if self._start is None:
            self._start = (now, cycles)
        t0, c0 = self._start
        text = f"{self.what}: {cycles:,}/~{predicted:,} cycles"
        if now > t0 and cycles > c0 and predicted > cycles:
            rate = (cycles - c0) / (now - t0)
            text += f" ({rate / 1e3:,.0f}k/s), ~{(predicted - cycles) / rate:,.0f} s left"
        self._status.update(text)

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)
