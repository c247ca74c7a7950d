"""Quality numbers are computed from the two models, never carried over."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from llmforge.compress.quality import compare_logits, torch_logits
from llmforge.config import ModelConfig
from llmforge.data.splits import load_split
from llmforge.metrics.score import score
from llmforge.models.loader import load_model


def test_a_model_against_itself_agrees_exactly(tiny_model_dir: Path, prepared: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    m = compare_logits(torch_logits(model), torch_logits(model), load_split(prepared, "test"))
    assert m["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert m["top1_agreement"] == 1.0 and m["perplexity_change"] == pytest.approx(0.0, abs=1e-9)


def test_a_perturbed_model_is_measured_and_matches_the_evaluator(tiny_model_dir: Path, prepared: Path) -> None:
    parent, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    child = copy.deepcopy(parent)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in child.model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    test = load_split(prepared, "test")
    m = compare_logits(torch_logits(parent), torch_logits(child), test, batch_size=4)
    assert m["kl_divergence"] > 1e-4 and m["top1_agreement"] < 1.0
    # the same perplexities as the evaluator's own code path (different batching and padding)
    assert m["perplexity"] == pytest.approx(score(child, test, batch_size=3)["perplexity"], rel=1e-4)
    assert m["parent_perplexity"] == pytest.approx(score(parent, test)["perplexity"], rel=1e-4)
