"""Unstructured pruning (weights set to zero) with torch.nn.utils.prune, masks made permanent.

Zeros in a dense tensor save nothing: the file and the latency stay the same (only structured pruning, or sparse
formats with sparse kernels, change them). The report says so, next to a per-layer sparsity table.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from transformers import TrainerCallback
from transformers.pytorch_utils import Conv1D

METHODS = {"magnitude": prune.L1Unstructured, "random": prune.RandomUnstructured}


def targets(model: Any) -> list[tuple[str, nn.Module]]:
    """The transformer blocks' linear layers, nn.Linear and GPT-2's Conv1D (embeddings and the output head are
    left dense, as is usual)."""
    head = model.get_output_embeddings()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and m is not head]


def prune_unstructured(model: Any, sparsity: float, method: str, scope: str, seed: int = 0) -> None:
    """Zero `sparsity` of the block weights: across all of them (`global`) or the same share in each layer."""
    torch.manual_seed(seed)  # RandomUnstructured draws from torch's global generator
    layers = targets(model)
    if scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=METHODS[method], amount=sparsity)
    else:
        for _, m in layers:
            METHODS[method].apply(m, "weight", amount=sparsity)
    for _, m in layers:
        prune.remove(m, "weight")  # fold the mask into the weight: a plain dense tensor with zeros


def sparsity_report(model: Any) -> dict[str, Any]:
    """Share of exact zeros per block layer and overall."""
    per_layer = {n: float((m.weight == 0).float().mean()) for n, m in targets(model)}
    zeros = sum(int((m.weight == 0).sum()) for _, m in targets(model))
    total = sum(m.weight.numel() for _, m in targets(model))
    return {"block_sparsity": zeros / total, "layer_sparsity": per_layer}


def cubic_schedule(final: float, steps: int) -> list[float]:
    """Sparsity after each of `steps` stages: s_t = s_f (1 - (1 - t/n)^3) (Zhu & Gupta, 2017)."""
    return [final * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


class KeepZeros(TrainerCallback):  # type: ignore[misc]
    """Keeps pruned weights at zero while fine-tuning between gradual stages (after every optimizer step)."""

    def __init__(self) -> None:
        self.masks: list[tuple[nn.Parameter, torch.Tensor]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        self.masks = [(m.weight, m.weight != 0) for _, m in targets(model)]

    @torch.no_grad()
    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        for weight, mask in self.masks:
            weight.mul_(mask)
