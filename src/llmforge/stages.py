"""The pipeline config (`llmforge run config.yaml`), and the one place that turns it into each stage's config.

A stage command given a pipeline YAML reads the sections it needs through `Stages`, so `llmforge train cfg.yaml`
and `llmforge run cfg.yaml` train the same way and write to the same places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from llmforge.compress.config import CompressOptions
from llmforge.config import ModelConfig, Section, TrainOptions, load
from llmforge.data.config import DataConfig
from llmforge.eval.config import EvalOptions
from llmforge.export.config import ExportOptions


class PipelineConfig(Section):
    """The full form: `llmforge run config.yaml`. Stage commands read the sections they need."""

    name: str = Field("run", description="Run name, used in summaries.")
    output_dir: Path = Field(Path("runs/run"), description="Where every stage writes its run directory.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)
    eval: EvalOptions = Field(default_factory=EvalOptions)
    compress: list[CompressOptions] = Field(
        default_factory=list, description="Compressed variants made from the fine-tuned model, each measured."
    )
    export: ExportOptions = Field(
        default_factory=ExportOptions, description="Deployment formats of the fine-tuned model, parity-checked."
    )


def load_config(path: Path | None = None, overrides: list[str] | None = None,
                flags: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a pipeline config: defaults < YAML < flags (dotted keys) < --set overrides."""
    return load(PipelineConfig, path, overrides, flags)


def stage_dirs(cfg: PipelineConfig) -> dict[str, Path]:
    """Where `llmforge run` puts each stage; stage commands given a pipeline YAML use the same places."""
    out = cfg.output_dir
    return {
        "prepare": out / "prepare",
        "train": out / "train",
        "eval_base": out / "eval-base",
        "eval_finetuned": out / "eval-finetuned",
        "compress": out / "compress",
        "export": out / "export",
    }
