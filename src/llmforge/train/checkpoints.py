"""Fault tolerance: checkpoints that count only once complete, resume from the last one, stop on NaN.

The Trainer writes `checkpoint-N/` in place; a crash mid-save would leave a directory that looks like a
checkpoint. `Guard` writes a marker after each save returns, and `last_complete` ignores any checkpoint
without it, so a resume never starts from a half-written (or NaN) one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from llmforge.artifacts import write_atomic

MARKER = "llmforge-complete"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def last_complete(checkpoints: Path) -> Path | None:
    """The highest-step checkpoint that finished saving, or None."""
    if not checkpoints.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in checkpoints.iterdir()
            if (m := _STEP.match(p.name)) and (p / MARKER).is_file()]
    return max(done)[1] if done else None


class Guard(TrainerCallback):  # type: ignore[misc]
    """Marks each checkpoint complete after it is saved, unless its weights are not finite, and stops the run
    at the first NaN/inf loss or weight, before anything is saved after it."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.step: int | None = None

    def _stop(self, control: Any, step: int, problem: str) -> None:
        if self.problem is None:
            self.problem, self.step = problem, step
        control.should_training_stop = True
        control.should_save = False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(control, state.global_step, f"the loss became {float(loss)}")

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if model is not None and not all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
            self._stop(control, state.global_step, "the weights became non-finite (NaN/inf)")
            return  # no marker: this checkpoint is never resumed from
        if state.is_world_process_zero and folder.is_dir():
            write_atomic(folder / MARKER, f"{state.global_step}\n")
