"""Metrics as pure functions. Perplexity is token-weighted: exp(total NLL / total scored tokens), never a mean
of per-sample perplexities.

Tensor metrics live here: token NLL, perplexity, strided (sliding-window) NLL, and parent-vs-child agreement
(KL divergence, top-1 agreement) for judging a compressed model against its parent. Text metrics (ROUGE, exact
match, syntax validity, repetition) live in text.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmforge.data.tokenize import IGNORE  # the label of a token that is not scored (transformers' -100)


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


def strided_perplexity_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding-window plan of the Hugging Face perplexity guide, as (begin, end, target_begin) triples.

    Each window feeds tokens [begin, end) and scores only the tokens at positions [target_begin, end), so no
    token is scored twice and each scored token sees up to `window - stride` tokens of earlier context. Windows
    start every `stride` tokens until one reaches the end. The first window scores all but token 0 (nothing
    predicts it). A token at a window's start has no context inside that window, so target_begin is at least
    begin + 1: with stride == window (disjoint chunks) the first token of every chunk goes unscored, exactly as in
    the guide; with stride < window every token after the first is scored exactly once. Windows that would score
    nothing (a trailing one-token chunk) are left out, so each window costs a forward pass that scores something.
    """
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens (one to condition on, one to score), got {window}")
    if not 0 < stride <= window:
        raise ValueError(f"stride must satisfy 0 < stride <= window, got stride={stride}, window={window}")
    plan: list[tuple[int, int, int]] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        target_begin = max(prev_end, begin + 1)
        if target_begin < end:
            plan.append((begin, end, target_begin))
        prev_end = end
        if end == n_tokens:
            break
    return plan


@torch.no_grad()
def strided_nll(
    model_forward: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor, window: int, stride: int,
    labels: torch.Tensor | None = None,
) -> tuple[float, int]:
    """Summed next-token NLL and scored-token count of one long sequence, scored with sliding windows.

    model_forward maps (1, L) token ids to (1, L, V) logits; input_ids is (T,). The plan is
    `strided_perplexity_windows(T, window, stride)`. Token-weighted: pass the result to `perplexity`. The number
    depends on the stride (a smaller stride gives each token more context and a lower perplexity), so always
    report window and stride next to a strided perplexity. `labels` (T,), aligned with input_ids, limits
    scoring to tokens whose label is not IGNORE (e.g. only the responses of a chat sample).
    """
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be one sequence of shape (T,), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() < 2:
        raise ValueError(f"strided_nll needs at least 2 tokens, got {input_ids.numel()}")
    total_nll, count = 0.0, 0
    for begin, end, target_begin in strided_perplexity_windows(input_ids.numel(), window, stride):
        ids = input_ids[begin:end].unsqueeze(0)  # (1, L)
        logits = model_forward(ids)  # (1, L, V)
        if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape):
            raise ValueError(
                f"model_forward must return logits of shape (1, {ids.size(1)}, V) for ids of shape "
                f"{tuple(ids.shape)}, got {tuple(logits.shape)}"
            )
        targets = (input_ids if labels is None else labels)[begin:end].clone().unsqueeze(0)  # (1, L)
        targets[:, : target_begin - begin] = IGNORE  # context only: already scored by an earlier window
        nll, n = token_nll(logits, targets)
        total_nll, count = total_nll + nll, count + n
    return total_nll, count


def _positions(parent_logits: torch.Tensor, child_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Check shapes and return the (B, T) bool mask of positions to average over."""
    if parent_logits.dim() != 3 or parent_logits.shape != child_logits.shape:
        raise ValueError(
            f"parent and child logits must both be (B, T, V) with the same shape, got parent "
            f"{tuple(parent_logits.shape)} and child {tuple(child_logits.shape)}"
        )
    if mask is None:
        mask = torch.ones(parent_logits.shape[:2], dtype=torch.bool, device=parent_logits.device)  # (B, T)
    elif mask.shape != parent_logits.shape[:2]:
        raise ValueError(
            f"mask must be (B, T) = {tuple(parent_logits.shape[:2])} to match the logits, got {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise ValueError("no positions to average over: the logits are empty or the mask selects nothing")
    return mask.bool()  # (B, T)


def kl_divergence(
    parent_logits: torch.Tensor, child_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Mean over positions of KL(parent || child) between next-token distributions, in nats.

    Logits are (B, T, V) and aligned (position t of both predicts the same token); mask (B, T) bool picks the
    positions to average over (e.g. non-padding). Computed in float32 with log_softmax, so bf16/fp16 logits do
    not underflow; vocabulary entries the parent gives zero probability contribute zero.
    """
    keep = _positions(parent_logits, child_logits, mask)  # (B, T)
    log_p = F.log_softmax(parent_logits.float(), dim=-1)  # (B, T, V)
    log_q = F.log_softmax(child_logits.float(), dim=-1)  # (B, T, V)
    p = log_p.exp()  # (B, T, V)
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))  # (B, T, V): 0 log 0 = 0
    kl = terms.sum(dim=-1)  # (B, T)
    return float(kl[keep].mean())


def top1_agreement(
    parent_logits: torch.Tensor, child_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Fraction of positions where parent and child pick the same most likely next token.

    Logits are (B, T, V); mask (B, T) bool picks the positions counted.
    """
    keep = _positions(parent_logits, child_logits, mask)  # (B, T)
    same = parent_logits.argmax(dim=-1) == child_logits.argmax(dim=-1)  # (B, T)
    return float(same[keep].float().mean())
