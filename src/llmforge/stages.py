"""The pipeline config (`llmforge run config.yaml`), and the one place that turns it into each stage's config.

A stage command given a pipeline YAML reads the sections it needs through `Stages`, so `llmforge train cfg.yaml`
and `llmforge run cfg.yaml` train the same way and write to the same places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from llmforge.artifacts import is_run_dir
from llmforge.compress.config import CompressConfig, CompressOptions
from llmforge.config import PREFERENCE_METHODS, ModelConfig, Section, TrainOptions, load
from llmforge.data.config import DataConfig
from llmforge.eval.config import EvalConfig, EvalOptions
from llmforge.export.config import ExportConfig, ExportOptions
from llmforge.prepare.config import PrepareConfig
from llmforge.registry.gate import RetrainOptions
from llmforge.train.config import TrainConfig


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
    retrain: RetrainOptions = Field(
        default_factory=RetrainOptions, description="`llmforge retrain`: the registered model, the data mix and "
        "the promotion gate (`llmforge run` does not read it)."
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


class Stages:
    """Each stage's config from one pipeline config: the only place a pipeline config becomes a stage config.

    The pipeline (`llmforge run`) and every stage command build their configs here, so a stage run alone reads the
    same sections and writes to the same place as in the pipeline. `model`, `data` and `output` override the
    pipeline's choice. Compress and export work on the fine-tuned model: the pipeline's train run when it has
    finished, else the configured model; their data is the pipeline's prepared dataset when that exists. Eval scores
    the configured model unless told another.
    """

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.dirs = stage_dirs(cfg)

    def model(self, name_or_path: str | Path | None = None) -> ModelConfig:
        """The pipeline's model section, pointing at `name_or_path` when given (dtype, revision etc. kept)."""
        if name_or_path is None:
            return self.cfg.model
        return self.cfg.model.model_copy(update={"name_or_path": str(name_or_path)})

    def trained(self) -> str:
        """The fine-tuned model: the pipeline's train run when it has finished, else the configured model."""
        return str(self.dirs["train"]) if is_run_dir(self.dirs["train"]) else self.cfg.model.name_or_path

    def data_if_prepared(self) -> Path | None:
        return self.dirs["prepare"] if is_run_dir(self.dirs["prepare"]) else None

    def prepare(self, output: Path | None = None) -> PrepareConfig:
        return PrepareConfig(model=self.cfg.model, data=self.cfg.data, output_dir=output or self.dirs["prepare"])

    def train(self, data: Path | None = None, output: Path | None = None) -> TrainConfig:
        return TrainConfig(model=self.cfg.model, data=data or self.dirs["prepare"], train=self.cfg.train,
                           output_dir=output or self.dirs["train"])

    def eval(self, model: str | Path | None = None, data: Path | None = None,
             output: Path | None = None) -> EvalConfig:
        """A preference method's fully trained model is scored against the base it was trained from (eval.reference,
        unless the config names one); an adapter run already is, with its adapter off, without a second copy."""
        options = self.cfg.eval
        train = self.cfg.train
        if model is not None and train.method in PREFERENCE_METHODS and train.weights == "full" \
                and options.reference is None:
            options = options.model_copy(update={"reference": self.cfg.model.name_or_path})
        return EvalConfig(model=self.model(model), data=data or self.dirs["prepare"], eval=options,
                          output_dir=output or self.cfg.output_dir / "eval")

    def compress(self, options: CompressOptions, model: str | Path | None = None, data: Path | None = None,
                 output: Path | None = None) -> CompressConfig:
        return CompressConfig(model=self.model(model or self.trained()), data=data or self.data_if_prepared(),
                              compress=options, output_dir=output or self.dirs["compress"] / options.variant_name())

    def export(self, model: str | Path | None = None, data: Path | None = None,
               output: Path | None = None) -> ExportConfig:
        options = self.cfg.export if self.cfg.export.formats else ExportConfig.model_fields["export"].get_default(
            call_default_factory=True)
        return ExportConfig(model=self.model(model or self.trained()), data=data or self.data_if_prepared(),
                            export=options, output_dir=output or self.dirs["export"])
