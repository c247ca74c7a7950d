"""`llmforge eval`: token-weighted perplexity of a model over the trainable tokens of a prepared split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmforge.artifacts import RunDir, is_run_dir, read_manifest
from llmforge.config import EvalConfig
from llmforge.eval.metrics import IGNORE, perplexity, token_nll
from llmforge.models.loader import load_model

Progress = Callable[[int], None]


@dataclass
class EvalResult:
    output_dir: Path
    metrics: dict[str, Any]


def load_split(prepared: Path, split: str) -> Any:
    from datasets import load_from_disk

    manifest = read_manifest(prepared)
    if manifest.get("kind") != "prepared-dataset":
        raise ValueError(f"{prepared} is a '{manifest.get('kind')}' run, not a prepared dataset")
    return load_from_disk(str(Path(prepared) / split))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def score(model: Any, dataset: Any, batch_size: int = 8, progress: Progress | None = None) -> dict[str, float]:
    """Summed NLL over every trainable token of `dataset`; padding and prompts are never scored."""
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths together: less padding
    total_nll, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = dataset.select(order[start : start + batch_size])
        ids, lab = list(rows["input_ids"]), list(rows["labels"])
        input_ids = _pad(ids, 0).to(device)  # (B, T)
        labels = _pad(lab, IGNORE).to(device)  # (B, T)
        mask = _pad([[1] * len(r) for r in ids], 0).to(device)  # (B, T)
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        nll, n = token_nll(logits, labels)
        total_nll, tokens = total_nll + nll, tokens + n
        if progress:
            progress(len(rows))
    return {
        "loss": total_nll / tokens,
        "perplexity": perplexity(total_nll, tokens),
        "nll_sum": total_nll,
        "tokens": tokens,
        "samples": len(dataset),
    }


def evaluate(cfg: EvalConfig, progress: Progress | None = None) -> EvalResult:
    dataset = load_split(cfg.data, cfg.eval.split)
    if cfg.eval.max_samples:
        dataset = dataset.select(range(min(cfg.eval.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"split '{cfg.eval.split}' of {cfg.data} is empty")
    model, _ = load_model(cfg.model)
    parents = [cfg.data] + ([Path(cfg.model.name_or_path)] if is_run_dir(Path(cfg.model.name_or_path)) else [])
    with RunDir(cfg.output_dir, kind="eval", command="eval", config=cfg, parents=parents,
                dataset_fingerprint=read_manifest(cfg.data).get("dataset_fingerprint")) as run:
        metrics = {"split": cfg.eval.split, "model": cfg.model.name_or_path,
                   **score(model, dataset, cfg.eval.batch_size, progress)}
        run.finish(metrics)
    return EvalResult(cfg.output_dir, metrics)
