"""The perplexity of a model over a prepared split: every stage that reports a held-out perplexity uses this.

Token-weighted over the trainable tokens only (prompts and padding are never scored), in padded batches of
similar lengths, or in sliding windows for samples longer than the model's window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmforge.metrics.tokens import IGNORE, perplexity, strided_nll, token_nll
from llmforge.models.runtimes import Runtime, as_runtime
from llmforge.progress import begin

Progress = Callable[[int], None]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _strided(runtime: Runtime, row: dict[str, Any], window: int, stride: int) -> tuple[float, int]:
    ids = torch.tensor(row["input_ids"])  # (T,)
    labels = torch.tensor(row["labels"])  # (T,)

    def forward(x: torch.Tensor) -> torch.Tensor:  # (1, L) -> (1, L, V)
        return runtime.forward(x, torch.ones_like(x)).cpu()

    return strided_nll(forward, ids, window, stride, labels)


@torch.no_grad()
def score(
    model: Any, dataset: Any, batch_size: int = 8, progress: Progress | None = None,
    window: int | None = None, stride: int | None = None,
) -> dict[str, float]:
    """Summed NLL over every trainable token of `dataset`; padding and prompts are never scored.

    `model` is a torch model or any runtime (`llmforge.models.runtimes`): ONNX Runtime and llama.cpp artifacts are
    scored with the same batches, masks and windows. Samples longer than `window` are scored with sliding windows
    (`stride`, default window // 2); the rest in padded batches. Both are reported with the result.
    """
    runtime = as_runtime(model)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths together: less padding
    total_nll, tokens = 0.0, 0
    stride = stride or (window // 2 if window else None)
    begin(progress, "perplexity", len(dataset))
    if window:
        long = [i for i in order if lengths[i] > window]
        order = [i for i in order if lengths[i] <= window]
        for i in long:
            nll, n = _strided(runtime, dataset[i], window, stride)
            total_nll, tokens = total_nll + nll, tokens + n
            if progress:
                progress(1)
    for start in range(0, len(order), batch_size):
        rows = dataset.select(order[start : start + batch_size])
        ids, lab = list(rows["input_ids"]), list(rows["labels"])
        input_ids = _pad(ids, 0)  # (B, T)
        mask = _pad([[1] * len(r) for r in ids], 0)  # (B, T)
        logits = runtime.forward(input_ids, mask)  # (B, T, V)
        nll, n = token_nll(logits, _pad(lab, IGNORE).to(logits.device))
        total_nll, tokens = total_nll + nll, tokens + n
        if progress:
            progress(len(rows))
    return {
        "loss": total_nll / tokens,
        "perplexity": perplexity(total_nll, tokens),
        "nll_sum": total_nll,
        "tokens": tokens,
        "samples": len(dataset),
        "window": window,
        "stride": stride,
    }
