"""`llmforge train`'s config. Its options (`TrainOptions`) are a shared section in `llmforge.config`: compress's
recovery fine-tune takes them too."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmforge.config import ModelConfig, Section, TrainOptions


class TrainConfig(Section):
    """`llmforge train`: fine-tune (or pretrain) a model on a prepared dataset."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: Path = Field(..., description="A prepared dataset run directory (output of `llmforge prepare`).")
    train: TrainOptions = Field(default_factory=TrainOptions)
    output_dir: Path = Field(Path("runs/train"))
