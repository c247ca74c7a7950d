"""The perplexity of a model over a prepared split: every stage that reports a held-out perplexity uses this.

Token-weighted over the trainable tokens only (prompts and padding are never scored), in padded batches of
similar lengths, or in sliding windows for samples longer than the model's window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def _by_group(groups: Sequence[str], sample_nll: list[float], sample_tokens: list[int]) -> dict[str, Any]:
    """Token-weighted perplexity of each group of samples: exp(group NLL / group tokens), with its tokens and
    samples; the groups' NLLs and tokens add up to the whole split's. A group with no scored token has no
    perplexity (None)."""
    sums: dict[str, list[float]] = {}
    for group, nll, n in zip(groups, sample_nll, sample_tokens):
        acc = sums.setdefault(group, [0.0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + nll, acc[1] + n, acc[2] + 1
    return {g: {"perplexity": perplexity(nll, int(n)) if n else None, "nll_sum": nll, "tokens": int(n),
                "samples": int(k)} for g, (nll, n, k) in sorted(sums.items(), key=lambda kv: -kv[1][1])}


@torch.no_grad()
def score(
    model: Any, dataset: Any, batch_size: int = 8, progress: Progress | None = None,
    window: int | None = None, stride: int | None = None, groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Summed NLL over every trainable token of `dataset`; padding and prompts are never scored.

    `model` is a torch model or any runtime (`llmforge.models.runtimes`): ONNX Runtime and llama.cpp artifacts are
    scored with the same batches, masks and windows. Samples longer than `window` are scored with sliding windows
    (`stride`, default window // 2); the rest in padded batches. Both are reported with the result. `groups`, one
    label per sample (e.g. its script), adds `by_group`: the perplexity of each group's samples, from the same
    forward passes.
    """
    runtime = as_runtime(model)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    if groups is not None and len(groups) != len(lengths):
        raise ValueError(f"groups has {len(groups)} labels for {len(lengths)} samples")
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths together: less padding
    sample_nll, sample_tokens = [0.0] * len(lengths), [0] * len(lengths)
    stride = stride or (window // 2 if window else None)
    begin(progress, "perplexity", len(dataset))
    if window:
        long = [i for i in order if lengths[i] > window]
        order = [i for i in order if lengths[i] <= window]
        for i in long:
            sample_nll[i], sample_tokens[i] = _strided(runtime, dataset[i], window, stride)
            if progress:
                progress(1)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        rows = dataset.select(chosen)
        ids, lab = list(rows["input_ids"]), list(rows["labels"])
        input_ids = _pad(ids, 0)  # (B, T)
        mask = _pad([[1] * len(r) for r in ids], 0)  # (B, T)
        logits = runtime.forward(input_ids, mask)  # (B, T, V)
        labels = _pad(lab, IGNORE).to(logits.device)  # (B, T)
        for row, i in enumerate(chosen):  # per sample, so a split can be broken down by group
            sample_nll[i], sample_tokens[i] = token_nll(logits[row : row + 1], labels[row : row + 1])
        if progress:
            progress(len(rows))
    total_nll, tokens = sum(sample_nll), sum(sample_tokens)
    result: dict[str, Any] = {
        "loss": total_nll / tokens,
        "perplexity": perplexity(total_nll, tokens),
        "nll_sum": total_nll,
        "tokens": tokens,
        "samples": len(dataset),
        "window": window,
        "stride": stride,
    }
    if groups is not None:
        result["by_group"] = _by_group(groups, sample_nll, sample_tokens)
    return result
