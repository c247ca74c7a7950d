"""Per-layer int8 sensitivity: swap one linear layer at a time for its int8 version and measure the damage.

The float model is the reference; each row is that model with exactly one layer quantized (int8 weights and,
for int8-dynamic, int8 activations), compared with the reference on calibration samples: KL(reference || swapped)
and top-1 agreement of the next-token distributions, and the change of the next-token perplexity. Layers whose
int8 activations cost most are the ones to keep at weight-only int8 (`quantize.weight_only: auto`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from llmforge.models import int8
from llmforge.models.channels import weight_oi

Batches = list[dict[str, torch.Tensor]]


def quantizable_layers(model: nn.Module) -> list[str]:
    """Every linear layer the int8 artifact quantizes, with the output head last."""
    return [*int8._linear_names(model), "lm_head"]


def _int8_module(model: nn.Module, name: str, activations: str, scales: str) -> nn.Module:
    layer = model.get_submodule(name)
    q, scale = int8.quantize_weight(weight_oi(layer))  # (O, I), GPT-2's Conv1D included
    return int8.runtime_linear(q, scale, getattr(layer, "bias", None), activations, "torch", scales)


class Reference:
    """The float model's next-token log-probabilities on the calibration batches (real tokens only)."""

    def __init__(self, model: nn.Module, batches: Batches) -> None:
        self.batches = batches
        self.log_probs, self.nll = self._run(model)

    @torch.no_grad()
    def _run(self, model: nn.Module) -> tuple[list[torch.Tensor], float]:
        out, nll = [], 0.0
        for batch in self.batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits[:, :-1].float()  # (B, T-1, V)
            keep = (batch["attention_mask"][:, :-1] * batch["attention_mask"][:, 1:]).bool()  # (B, T-1)
            log_probs = torch.log_softmax(logits[keep], dim=-1)  # (N, V)
            targets = batch["input_ids"][:, 1:][keep]  # (N,)
            nll -= float(log_probs.gather(1, targets[:, None]).sum())
            out.append(log_probs)
        return out, nll

    def tokens(self) -> int:
        return sum(len(lp) for lp in self.log_probs)

    def compare(self, model: nn.Module) -> dict[str, float]:
        """KL(reference || model), top-1 agreement and perplexity change on the same tokens."""
        kl, agree = 0.0, 0
        log_probs, nll = self._run(model)
        for ref, ours in zip(self.log_probs, log_probs):
            kl += float((ref.exp() * (ref - ours)).sum())
            agree += int((ref.argmax(-1) == ours.argmax(-1)).sum())
        n = max(self.tokens(), 1)
        return {"kl_divergence": kl / n, "top1_agreement": agree / n,
                "perplexity_change": float(torch.tensor((nll - self.nll) / n).exp()) - 1}


@torch.no_grad()
def layer_sensitivity(model: nn.Module, batches: Batches, activations: str = "dynamic",
                      scales: str = "per-token", layers: list[str] | None = None,
                      progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One row per layer, most damaging first; the model is restored after each swap."""
    reference = Reference(model, batches)
    rows = []
    for name in layers or quantizable_layers(model):
        original = model.get_submodule(name)
        int8._set_module(model, name, _int8_module(model, name, activations, scales))
        try:
            rows.append({"layer": name, **reference.compare(model)})
        finally:
            int8._set_module(model, name, original)
        if progress:
            progress(1)
    return sorted(rows, key=lambda r: -r["kl_divergence"])


def most_sensitive(rows: list[dict[str, Any]], share: float) -> list[str]:
    """The fewest layers that together account for `share` of the summed single-layer KL (outliers first)."""
    total = sum(max(r["kl_divergence"], 0.0) for r in rows)
    chosen, covered = [], 0.0
    for row in sorted(rows, key=lambda r: -r["kl_divergence"]):
        if covered >= share * total:
            break
        chosen.append(row["layer"])
        covered += max(row["kl_divergence"], 0.0)
    return chosen
