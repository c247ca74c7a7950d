from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmforge.metrics.score import score
from llmforge.metrics.tokens import IGNORE, perplexity, token_nll


def test_uniform_model_perplexity_equals_vocab_size() -> None:
    vocab = 37
    logits = torch.zeros(2, 9, vocab)  # (B, T, V): uniform next-token distribution
    labels = torch.randint(0, vocab, (2, 9))
    nll, n = token_nll(logits, labels)
    assert n == 2 * 8
    assert perplexity(nll, n) == pytest.approx(vocab, rel=1e-6)


def test_token_nll_matches_hand_computation_and_skips_ignored() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # (1, 3, 2)
    labels = torch.tensor([[IGNORE, 1, IGNORE]])
    nll, n = token_nll(logits, labels)
    # only position 0's prediction of token 1 is scored: -log softmax([2, 0])[1]
    assert n == 1
    assert nll == pytest.approx(-math.log(math.exp(0) / (math.exp(2) + math.exp(0))), rel=1e-6)


def test_perplexity_is_token_weighted_not_mean_of_samples() -> None:
    # two samples: 1 token at NLL 0 and 3 tokens at NLL ln 8 -> exp(3 ln 8 / 4), not mean(1, 8)
    assert perplexity(3 * math.log(8), 4) == pytest.approx(8 ** 0.75)


def test_score_equals_independent_per_sample_computation(tiny_model_dir: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.manual_seed(0)
    rows = []
    for length in (5, 9, 14, 3):
        ids = torch.randint(5, 200, (length,)).tolist()
        labels = [IGNORE] * (length // 2) + ids[length // 2 :]
        rows.append({"input_ids": ids, "labels": labels})
    dataset = Dataset.from_list(rows)
    got = score(model, dataset, batch_size=3)  # padded batches of mixed lengths
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(torch.tensor([row["input_ids"]])).logits[0, :-1]
            targets = torch.tensor(row["labels"][1:])
            keep = targets != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    assert got["tokens"] == count
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


@pytest.mark.parametrize(("window", "stride"), [(8, 8), (8, 3), (6, 5)])
def test_strided_score_matches_independent_transformers_computation(tiny_model_dir: Path, window: int,
                                                                     stride: int) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from llmforge.metrics.tokens import strided_perplexity_windows

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.manual_seed(1)
    ids = torch.randint(5, 200, (23,)).tolist()
    labels = [IGNORE] * 4 + ids[4:]
    got = score(model, Dataset.from_list([{"input_ids": ids, "labels": labels}]), window=window, stride=stride)
    # independent: one plain forward pass per window, NLL summed over the tokens that window scores
    total, count = 0.0, 0
    with torch.no_grad():
        for begin, end, target_begin in strided_perplexity_windows(len(ids), window, stride):
            logits = model(torch.tensor([ids[begin:end]])).logits[0]
            for pos in range(max(target_begin, begin + 1), end):
                if labels[pos] == IGNORE:
                    continue
                logp = torch.log_softmax(logits[pos - begin - 1], -1)[ids[pos]]
                total, count = total - logp.item(), count + 1
    assert got["tokens"] == count and got["window"] == window and got["stride"] == stride
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)
