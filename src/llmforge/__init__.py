"""llmforge: carry a language model through its whole life.

Public Python API (each stage: a typed config in, a `StageResult(output_dir, metrics)` out):

    from llmforge import ModelConfig, PrepareConfig, TrainConfig, EvalConfig, CompressConfig, ExportConfig
    from llmforge import PipelineConfig, load_config, prepare, train, evaluate, compress, export, serve, run, load
    from llmforge import retrain   # continuous training: a candidate on old + new data, promoted past a gate

Importing llmforge loads no model and imports no heavy library until one of these is called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "prepare": ("llmforge.prepare.runner", "prepare"),
    "train": ("llmforge.train.runner", "train"),
    "evaluate": ("llmforge.eval.runner", "evaluate"),
    "compress": ("llmforge.pipeline", "compress"),  # the stage, handed the train stage for recovery fine-tunes
    "export": ("llmforge.export.runner", "export"),
    "serve": ("llmforge.serve.runner", "serve"),
    "ServeSettings": ("llmforge.serve.settings", "ServeSettings"),
    "run": ("llmforge.pipeline", "run"),
    "retrain": ("llmforge.retrain", "retrain"),
    "load": ("llmforge.models.loader", "load_model"),
    "pull": ("llmforge.models.pull", "pull"),
    "PullConfig": ("llmforge.models.pull", "PullConfig"),
    "load_config": ("llmforge.stages", "load_config"),
    "PipelineConfig": ("llmforge.stages", "PipelineConfig"),
    "ModelConfig": ("llmforge.config", "ModelConfig"),
    "PrepareConfig": ("llmforge.prepare.config", "PrepareConfig"),
    "TrainConfig": ("llmforge.train.config", "TrainConfig"),
    "EvalConfig": ("llmforge.eval.config", "EvalConfig"),
    "CompressConfig": ("llmforge.compress.config", "CompressConfig"),
    "ExportConfig": ("llmforge.export.config", "ExportConfig"),
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'llmforge' has no attribute '{name}'")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
