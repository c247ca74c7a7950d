"""The progress contract between long-running library code and whoever shows it, and the one `Hooks` type every
stage takes.

Library code reports with a plain callback, `progress(n)`: n more units done. Before a phase with a known size it
calls `begin(progress, "perplexity", total)`, so that the shell can show `84/200` with a rate and an ETA instead
of `84/?`. A plain function (a test's lambda) need not know about phases: `begin` skips what has no `begin`.
Nothing here prints; cli.py passes ui.py's reporters in.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

Progress = Callable[[int], None]


def _quiet(name: str) -> None:
    return None


def _no_progress(name: str) -> AbstractContextManager[Progress | None]:
    return nullcontext(None)


@dataclass(frozen=True)
class Hooks:
    """How a stage reports while it runs. Every stage takes one (`stage(cfg, hooks)`); the shell passes it in
    (cli.py: ui.py's reporters), and the default reports nothing.

    `stage(name)`: a named phase begins. `progress(name)`: a fresh reporter for a named piece of work, as a context
    manager (it yields None: no progress). `train_callbacks()`: transformers TrainerCallbacks for any training the
    stage runs (compress's recovery fine-tune too)."""

    stage: Callable[[str], None] = _quiet
    progress: Callable[[str], AbstractContextManager[Progress | None]] = _no_progress
    train_callbacks: Callable[[], list[Any]] = list


def begin(progress: Progress | None, description: str, total: int | None) -> None:
    """Start a new phase of `total` units (None: unknown) on `progress`, if it understands phases."""
    start: Any = getattr(progress, "begin", None)
    if callable(start):
        start(description, total)


class Counted(list):  # type: ignore[type-arg]
    """A list that tells `progress` of each item a consumer has finished with, on every pass over it.

    For work whose passes are decided deeper down (calibration batches feeding SmoothQuant, then sensitivity):
    the log shows batches done and their rate, where the number of passes is not known up front.
    """

    def __init__(self, items: Any, progress: Progress | None) -> None:
        super().__init__(items)
        self.progress = progress

    def __iter__(self) -> Any:
        for item in super().__iter__():
            yield item
            if self.progress:
                self.progress(1)
