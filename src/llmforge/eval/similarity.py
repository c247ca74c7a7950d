"""Semantic similarity of answers to references with a local encoder (offline: no metric downloads).

`evaluate.load("bertscore")` fetches code and weights from a hub; here the encoder is a directory the user has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmforge.errors import LlmforgeError, require


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


@torch.no_grad()
def _embed(texts: Sequence[str], tokenizer: Any, model: Any, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                        return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))  # (B, H): mean over real tokens
    return torch.cat(out)  # (N, H)


def embedding_similarity(
    predictions: Sequence[str], references: Sequence[str], encoder_dir: str, batch_size: int = 16
) -> float:
    """Mean cosine similarity of mean-pooled encoder embeddings, in [-1, 1]."""
    from transformers import AutoModel, AutoTokenizer

    _check(predictions, references)
    try:
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
        model = AutoModel.from_pretrained(encoder_dir, local_files_only=True).eval()
    except OSError as exc:
        raise LlmforgeError(f"eval.similarity_model: cannot load a local encoder from '{encoder_dir}': {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    a = _embed(predictions, tokenizer, model, batch_size)
    b = _embed(references, tokenizer, model, batch_size)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def bertscore(predictions: Sequence[str], references: Sequence[str], model_dir: str, num_layers: int) -> dict[str, float]:
    """BERTScore P/R/F1 through the `bert-score` package, with a local model directory."""
    _check(predictions, references)
    bert_score = require("bert_score", "eval")
    p, r, f = bert_score.score(list(predictions), list(references), model_type=model_dir, num_layers=num_layers)
    return {"bertscore_precision": float(p.mean()), "bertscore_recall": float(r.mean()), "bertscore_f1": float(f.mean())}
