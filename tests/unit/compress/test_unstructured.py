from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmforge.compress import unstructured
from llmforge.config import ModelConfig
from llmforge.models.loader import load_model


@pytest.mark.parametrize(("method", "scope"), [("magnitude", "global"), ("magnitude", "layer"),
                                                ("random", "layer"), ("random", "global")])
def test_reaches_the_sparsity_and_the_masks_are_permanent(tiny_model_dir: Path, method: str, scope: str) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    unstructured.prune_unstructured(model, 0.4, method, scope)
    report = unstructured.sparsity_report(model)
    assert report["block_sparsity"] == pytest.approx(0.4, abs=0.005)
    if scope == "layer":
        assert all(v == pytest.approx(0.4, abs=0.01) for v in report["layer_sparsity"].values())
    for _, m in unstructured.targets(model):  # plain tensors again: no weight_orig / mask / hooks left
        assert not hasattr(m, "weight_orig") and not m._forward_pre_hooks


def test_magnitude_zeroes_the_smallest_weights(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    before = torch.cat([m.weight.detach().abs().flatten() for _, m in unstructured.targets(model)])
    unstructured.prune_unstructured(model, 0.3, "magnitude", "global")
    after = torch.cat([m.weight.detach().flatten() for _, m in unstructured.targets(model)])
    threshold = before.kthvalue(int(0.3 * before.numel())).values
    assert bool((before[after == 0] <= threshold + 1e-12).all())


def test_cubic_schedule() -> None:
    s = unstructured.cubic_schedule(0.5, 4)
    assert s[-1] == pytest.approx(0.5) and all(a < b for a, b in zip(s, s[1:]))
    assert s[0] == pytest.approx(0.5 * (1 - 0.75**3))


def test_keep_zeros_callback_restores_pruned_weights(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    unstructured.prune_unstructured(model, 0.5, "magnitude", "global")
    keep = unstructured.KeepZeros()
    keep.on_train_begin(None, None, None, model=model)
    with torch.no_grad():
        for _, m in unstructured.targets(model):
            m.weight.add_(0.1)  # an optimizer step would move the zeros
    keep.on_step_end(None, None, None)
    assert unstructured.sparsity_report(model)["block_sparsity"] == pytest.approx(0.5, abs=0.005)
