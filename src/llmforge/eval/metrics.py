"""Metrics as pure functions. Perplexity is token-weighted: exp(total NLL / total scored tokens), never a mean
of per-sample perplexities."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL and the number of scored tokens.

    logits: (B, T, V); labels: (B, T), aligned with the inputs (IGNORE where not scored). Position t's logits
    predict labels[t + 1].
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )
    return float(nll), int((shift_labels != IGNORE).sum())


def perplexity(total_nll: float, tokens: int) -> float:
    if tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    return math.exp(total_nll / tokens)
