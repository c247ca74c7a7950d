"""`llmforge merge`: fold a LoRA/DoRA adapter into its base weights, as a self-describing run directory."""

from __future__ import annotations

from pathlib import Path

from llmforge.artifacts import RunDir, is_run_dir
from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models.merge import merge_adapter
from llmforge.models.reference import resolve_model


def merge(adapter: Path, output: Path) -> Path:
    if resolve_model(str(adapter)).adapter is None:
        raise LlmforgeError(f"{adapter} holds no LoRA adapter to merge (it is a full model already)")
    parents = [adapter] if is_run_dir(adapter) else []
    with RunDir(output, kind="model", command="merge", config={"adapter": str(adapter)}, parents=parents) as run:
        facts = merge_adapter(ModelConfig(name_or_path=str(adapter)), run.file("model"))
        run.extra = {"method": "merged-adapter", "model_dir": "model", "adapter_dir": None,
                     "base_model": facts["base_model"]}
        run.finish({"parameters": facts["parameters"]})
    return output
