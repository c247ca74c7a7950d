"""`llmforge prepare`'s config: the model whose tokenizer is used, the data section, where the run goes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmforge.config import ModelConfig, Section
from llmforge.data.config import DataConfig


class PrepareConfig(Section):
    """`llmforge prepare`: raw records -> tokenized, labelled, split `datasets` directories."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Model whose tokenizer is used.")
    data: DataConfig = Field(default_factory=DataConfig)
    output_dir: Path = Field(Path("runs/prepare"))
