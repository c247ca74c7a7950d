"""`launch(nproc=2)`: two torch.distributed processes (gloo, CPU) train as one process does on the same global
batch. Two new interpreters each import torch and transformers (~10 s on 2 cores), hence the integration tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.config import ModelConfig, TrainOptions
from llmforge.train.config import TrainConfig
from llmforge.train.launch import launch
from llmforge.train.runner import train

pytestmark = pytest.mark.integration


def test_two_process_ddp_equals_one_process(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    opts = {"method": "full", "max_steps": 6, "learning_rate": 3e-3, "shuffle": False, "logging_steps": 1}
    model = ModelConfig(name_or_path=str(tiny_model_dir))
    one = train(TrainConfig(model=model, data=prepared, train=TrainOptions(epochs=3, batch_size=8, **opts),
                            output_dir=tmp_path / "one")).metrics
    cfg = TrainConfig(model=model, data=prepared, train=TrainOptions(batch_size=4, **opts), output_dir=tmp_path / "two")
    two = launch(cfg, nproc=2).metrics  # 2 processes x 4 samples = the same global batch of 8
    assert two["train_steps"] == one["train_steps"] == 6
    assert two["train_tokens"] == one["train_tokens"]
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)

