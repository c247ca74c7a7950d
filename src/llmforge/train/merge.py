"""`llmforge merge`: fold a LoRA/DoRA adapter into its base weights, as a self-describing run directory."""

from __future__ import annotations

from pathlib import Path

from llmforge.artifacts import RunDir, is_run_dir
from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models.loader import load_model, resolve_model


def merge(adapter: Path, output: Path) -> Path:
    resolved = resolve_model(str(adapter))
    if resolved.adapter is None:
        raise LlmforgeError(f"{adapter} holds no LoRA adapter to merge (it is a full model already)")
    model, tokenizer = load_model(ModelConfig(name_or_path=str(adapter)), merge_adapter=True)
    parents = [adapter] if is_run_dir(adapter) else []
    with RunDir(output, kind="model", command="merge", config={"adapter": str(adapter)}, parents=parents) as run:
        model.config.use_cache = True
        model.save_pretrained(str(run.file("model")))
        tokenizer.save_pretrained(str(run.file("model")))
        run.extra = {"method": "merged-adapter", "model_dir": "model", "adapter_dir": None,
                     "base_model": resolved.path}
        run.finish({"parameters": sum(p.numel() for p in model.parameters())})
    return output
