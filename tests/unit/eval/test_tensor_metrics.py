from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from llmforge.metrics.tokens import (
    kl_divergence,
    strided_nll,
    strided_perplexity_windows,
    token_nll,
    top1_agreement,
)

V = 11


def _context_model(seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tiny deterministic causal "model" whose logits depend on the whole prefix inside the window.

    logits_t = E[x_t] + mean_{s <= t} C[x_s]: a bigram table plus a causal running mean, so how much context a
    token gets changes its NLL (a pure bigram table would hide window mistakes).
    """
    torch.manual_seed(seed)
    table, ctx = torch.nn.Embedding(V, V), torch.nn.Embedding(V, V)

    @torch.no_grad()
    def forward(ids: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(1, ids.size(1) + 1).view(1, -1, 1)  # (1, L, 1)
        return table(ids) + ctx(ids).cumsum(dim=1) / steps  # (1, L, V)

    return forward


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed))  # (T,)


def _nll_of(logits_row: torch.Tensor, target: int) -> float:
    return -float(F.log_softmax(logits_row, dim=-1)[target])


@pytest.mark.parametrize(
    ("n", "window", "stride"),
    [(10, 4, 4), (10, 4, 2), (10, 4, 1), (10, 4, 3), (7, 10, 5), (12, 5, 5), (2, 2, 1), (9, 3, 3), (50, 8, 3)],
)
def test_windows_score_every_token_at_most_once_and_exactly_once_when_overlapping(
    n: int, window: int, stride: int
) -> None:
    plan = strided_perplexity_windows(n, window, stride)
    counts = [0] * n
    for begin, end, target_begin in plan:
        assert 0 <= begin < target_begin < end <= n  # at least one context token, at least one scored token
        assert end - begin <= window
        assert begin % stride == 0
        for pos in range(target_begin, end):
            counts[pos] += 1
    assert counts[0] == 0  # nothing predicts the first token
    assert plan[0][0] == 0 and plan[0][2] == 1
    assert plan[-1][1] == n
    if stride < window:
        assert counts[1:] == [1] * (n - 1)
    else:  # disjoint chunks: each chunk's first token has no context and is skipped, as in the HF guide
        starts = set(range(0, n, window))
        assert counts == [0 if pos in starts else 1 for pos in range(n)]


def test_windows_match_hand_written_plan() -> None:
    assert strided_perplexity_windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert strided_perplexity_windows(9, 4, 4) == [(0, 4, 1), (4, 8, 5)]  # trailing chunk [8, 9) scores nothing
    assert strided_perplexity_windows(0, 4, 4) == []


@pytest.mark.parametrize(("window", "stride"), [(4, 0), (4, 5), (4, -1)])
def test_windows_reject_bad_stride_naming_both(window: int, stride: int) -> None:
    with pytest.raises(ValueError, match=rf"stride={stride}, window={window}"):
        strided_perplexity_windows(10, window, stride)


def test_windows_reject_window_too_small() -> None:
    with pytest.raises(ValueError, match="window"):
        strided_perplexity_windows(10, 1, 1)


@pytest.mark.parametrize(("n", "window"), [(12, 4), (11, 4), (13, 5)])
def test_strided_nll_disjoint_chunks_equals_hand_sum(n: int, window: int) -> None:
    model, ids = _context_model(), _ids(n)
    total, count = 0.0, 0
    for start in range(0, n, window):
        chunk = ids[start : start + window]
        logits = model(chunk.unsqueeze(0))[0]  # (L, V)
        for t in range(1, chunk.numel()):
            total += _nll_of(logits[t - 1], int(chunk[t]))
            count += 1
    got_nll, got_count = strided_nll(model, ids, window=window, stride=window)
    assert got_count == count
    assert got_nll == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize(("n", "window", "stride"), [(10, 4, 2), (13, 5, 3), (9, 4, 1), (7, 10, 3)])
def test_strided_nll_overlapping_equals_per_token_loop(n: int, window: int, stride: int) -> None:
    model, ids = _context_model(), _ids(n)
    total = 0.0
    for pos in range(1, n):
        # token `pos` is scored in the first window (starts 0, stride, 2*stride, ...) that contains it
        begin = 0
        while begin + window <= pos:
            begin += stride
        logits = model(ids[begin : min(begin + window, n)].unsqueeze(0))[0]  # (L, V)
        total += _nll_of(logits[pos - 1 - begin], int(ids[pos]))
    got_nll, got_count = strided_nll(model, ids, window=window, stride=stride)
    assert got_count == n - 1
    assert got_nll == pytest.approx(total, rel=1e-5)
    if n > window:  # the window really limits context: full-sequence scoring differs
        full_nll, _ = token_nll(model(ids.unsqueeze(0)), ids.unsqueeze(0))
        assert full_nll != pytest.approx(got_nll, rel=1e-4)


def test_strided_nll_rejects_batched_ids_and_bad_logits() -> None:
    with pytest.raises(ValueError, match=r"\(T,\)"):
        strided_nll(_context_model(), _ids(8).unsqueeze(0), window=4, stride=2)
    with pytest.raises(ValueError, match="model_forward"):
        strided_nll(lambda ids: torch.zeros(1, V), _ids(8), window=4, stride=2)


def test_kl_of_identical_logits_is_zero() -> None:
    logits = torch.randn(2, 5, V, generator=torch.Generator().manual_seed(0))  # (B, T, V)
    assert kl_divergence(logits, logits.clone()) == pytest.approx(0.0, abs=1e-6)


def test_kl_two_class_matches_formula_and_mask_selects_positions() -> None:
    # parent p = softmax([0, ln 3]) = (1/4, 3/4); child q = (1/2, 1/2) at position 0, identical at position 1
    parent = torch.tensor([[[0.0, math.log(3)], [1.0, 2.0]]])  # (1, 2, 2)
    child = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])  # (1, 2, 2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    only_first = torch.tensor([[True, False]])
    assert kl_divergence(parent, child, mask=only_first) == pytest.approx(expected, rel=1e-5)
    assert kl_divergence(parent, child) == pytest.approx(expected / 2, rel=1e-5)
    # KL is not symmetric: KL(q || p) is a different number
    reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(child, parent, mask=only_first) == pytest.approx(reverse, rel=1e-5)


def test_kl_handles_low_precision_and_zero_parent_probability() -> None:
    parent = torch.tensor([[[0.0, float("-inf"), 0.0]]])  # (1, 1, 3): parent never picks token 1
    child = torch.tensor([[[0.0, 5.0, 0.0]]])  # (1, 1, 3)
    q = torch.softmax(child[0, 0], dim=-1)
    expected = 2 * 0.5 * math.log(0.5 / float(q[0]))
    assert kl_divergence(parent, child) == pytest.approx(expected, rel=1e-5)
    assert kl_divergence(parent.bfloat16(), child.bfloat16()) == pytest.approx(expected, rel=1e-2)


def test_top1_agreement_on_constructed_case() -> None:
    parent = torch.zeros(1, 4, 3)  # (B, T, V)
    child = torch.zeros(1, 4, 3)  # (B, T, V)
    for t, (p_top, c_top) in enumerate([(0, 0), (1, 1), (2, 0), (1, 2)]):
        parent[0, t, p_top] = 1.0
        child[0, t, c_top] = 3.0
    assert top1_agreement(parent, child) == pytest.approx(0.5)
    assert top1_agreement(parent, child, mask=torch.tensor([[True, True, True, False]])) == pytest.approx(2 / 3)


def test_pairwise_tensor_metrics_reject_mismatched_shapes_and_empty_mask() -> None:
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="mask"):
        top1_agreement(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="selects nothing"):
        top1_agreement(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), mask=torch.zeros(1, 2, dtype=torch.bool))
