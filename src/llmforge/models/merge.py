"""Fold a LoRA/DoRA adapter into its base model's weights: the one merge `llmforge merge` and `export` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models.loader import load_model
from llmforge.models.reference import resolve_model


def merge_adapter(model: ModelConfig, out_dir: Path, device: torch.device | None = None) -> dict[str, Any]:
    """Write the merged model and its tokenizer to `out_dir` (a plain transformers model directory).

    Returns {base_model, adapter, parameters}. Raises when `model` names no adapter (it is a full model already).
    """
    resolved = resolve_model(model.name_or_path)
    if resolved.adapter is None:
        raise LlmforgeError(f"{model.name_or_path} holds no LoRA adapter to merge (it is a full model already)")
    merged, tokenizer = load_model(model, device, merge_adapter=True)
    merged.config.use_cache = True
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return {"base_model": resolved.path, "adapter": str(resolved.adapter),
            "parameters": sum(p.numel() for p in merged.parameters())}
