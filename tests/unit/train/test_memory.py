"""The dry run's memory estimate against a measured training run, and `gradient_checkpointing: auto`.

What is measured: the peak bytes of live tensor storage during `train()`, from the first step to the last. A
TorchDispatchMode sees every tensor a torch op allocates (forward, backward, optimizer) and a finalizer sees it
freed; the model's weights and buffers, created before, are counted from the start. This is the part of memory
the estimate models (weights, gradients, optimizer, activations, loss), exact and repeatable. RSS on the tiny
model would be mostly the Python process itself and change with the allocator and whatever ran before in the
test session; the real model's RSS is compared with the estimate in benchmarks/train_memory.py (benchmarks/NOTES.md).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import TrainerCallback

from llmforge.config import ModelConfig, TrainOptions
from llmforge.progress import Hooks
from llmforge.train import memory
from llmforge.train.config import TrainConfig
from llmforge.train.estimate import estimate
from llmforge.train.runner import train


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage alive: `start`, plus what torch ops allocate while the mode is active."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.now = self.peak = start
        self.live: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:  # a view or an in-place result: no new memory
                continue
            self.live.add(key)
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out

    def _freed(self, key: int, size: int) -> None:
        self.live.discard(key)
        self.now -= size


class Measure(TrainerCallback):  # type: ignore[misc]
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        held = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}  # tied weights once
        self.mode = LiveTensorBytes(sum(held.values()))
        self.mode.__enter__()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mode.__exit__(None, None, None)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_is_within_25_percent_of_the_measured_peak(tiny_model_dir: Path, prepared: Path, tmp_path: Path,
                                                            checkpointing: bool) -> None:
    options = TrainOptions(method="lora", max_steps=3, batch_size=16, precision="fp32",
                           gradient_checkpointing=checkpointing)
    cfg = TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared, train=options,
                      output_dir=tmp_path / "run")
    predicted = estimate(cfg, measured_steps=1)["memory_bytes"]
    measure = Measure()
    train(cfg, Hooks(train_callbacks=lambda: [measure]))
    tensors = predicted["total"] - predicted["runtime"]  # the process itself is not a tensor
    assert measure.mode.peak > 0.5 * 2**20 and measure.mode.now < measure.mode.peak
    assert tensors == pytest.approx(measure.mode.peak, rel=0.25), (predicted, measure.mode.peak)


def test_the_tracker_counts_what_autograd_keeps() -> None:
    x = torch.randn(256, 256, requires_grad=True)  # 256 KiB, created before: not counted
    with LiveTensorBytes(0) as mode:
        y = (x * 2).relu()  # x * 2 and its relu: 2 x 256 KiB, the relu's output saved for backward
        del y
    assert mode.peak == 2 * 256 * 256 * 4 and mode.now == 0


def test_checkpointing_auto_follows_the_machine(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.models.loader import load_model

    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    needs = memory.activation_bytes(model.config, 512, 8, True, False, lora_rank=16, lora_dropout=0.05, padded=True)
    lora = TrainOptions(method="lora", batch_size=8)
    monkeypatch.setattr(memory, "machine_memory", lambda: 2 * needs)  # activations: half the machine
    assert memory.gradient_checkpointing(lora, model, 512) is True
    monkeypatch.setattr(memory, "machine_memory", lambda: 8 * needs)  # an eighth: not worth the recompute
    assert memory.gradient_checkpointing(lora, model, 512) is False
    assert memory.gradient_checkpointing(lora.model_copy(update={"gradient_checkpointing": True}), model, 512)
    assert memory.gradient_checkpointing(lora.model_copy(update={"method": "qlora"}), model, 512)


def test_checkpointing_keeps_less_than_it_saves(tiny_model_dir: Path) -> None:
    from llmforge.models.loader import load_model

    config = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))[0].config
    full = memory.activation_bytes(config, 512, 8, True, False)
    kept = memory.activation_bytes(config, 512, 8, True, True)
    assert kept < full / config.num_hidden_layers * 1.5  # one layer's activations, and the layers' inputs
