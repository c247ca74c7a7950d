"""A variant's quality against its parent, on the same held-out samples.

Perplexity of both (response tokens only), KL(parent || variant) and top-1 agreement of their next-token
distributions at the same positions, and ROUGE of generated answers (against the references and against the
parent's own answers). Every number is computed here from the two models; none is carried over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmforge.metrics.tokens import IGNORE, kl_divergence, perplexity, token_nll, top1_agreement
from llmforge.progress import begin

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, attention_mask) -> (B, T, V)


def torch_logits(model: Any) -> LogitsFn:
    device = next(model.parameters()).device

    def fn(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
        return out.logits.float().cpu()

    return fn


def padded_batches(dataset: Any, batch_size: int) -> Any:
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        rows = dataset.select(order[start : start + batch_size])
        ids, labels = list(rows["input_ids"]), list(rows["labels"])
        width = max(len(r) for r in ids)
        yield (torch.tensor([r + [0] * (width - len(r)) for r in ids]),  # (B, T)
               torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),  # (B, T)
               torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels]))  # (B, T)


@torch.no_grad()
def compare_logits(parent: LogitsFn, child: LogitsFn, dataset: Any, batch_size: int = 8,
                   progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Perplexities of both, and token-weighted KL / top-1 agreement over the scored (response) positions."""
    nll = {"parent": 0.0, "child": 0.0}
    tokens, kl_sum, agree_sum = 0, 0.0, 0.0
    begin(progress, "quality against the parent", len(dataset))
    for input_ids, mask, labels in padded_batches(dataset, batch_size):
        p, c = parent(input_ids, mask), child(input_ids, mask)  # (B, T, V) each
        if progress:
            progress(len(input_ids))
        n = 0
        for key, logits in (("parent", p), ("child", c)):
            value, n = token_nll(logits, labels)
            nll[key] += value
        if n == 0:
            continue
        scored = labels[:, 1:] != IGNORE  # (B, T-1): position t predicts label t + 1
        kl_sum += kl_divergence(p[:, :-1], c[:, :-1], scored) * n
        agree_sum += top1_agreement(p[:, :-1], c[:, :-1], scored) * n
        tokens += n
    return {
        "perplexity": perplexity(nll["child"], tokens),
        "parent_perplexity": perplexity(nll["parent"], tokens),
        "perplexity_change": perplexity(nll["child"], tokens) / perplexity(nll["parent"], tokens) - 1,
        "kl_divergence": kl_sum / tokens,
        "top1_agreement": agree_sum / tokens,
        "scored_tokens": tokens,
    }


def compare_generations(parent: Any, child: Any, tokenizer: Any, dataset: Any, max_new_tokens: int,
                        batch_size: int = 8, progress: Callable[[int], None] | None = None,
                        ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy answers of both models: ROUGE against the references, and the variant's ROUGE-L against the
    parent's answers (how much of the parent's behaviour survived)."""
    from llmforge.metrics.generate import Decoding, generate_samples
    from llmforge.metrics.text import rouge

    decoding = Decoding(max_new_tokens=max_new_tokens)
    theirs = generate_samples(parent, tokenizer, dataset, decoding, batch_size, progress)
    ours = generate_samples(child, tokenizer, dataset, decoding, batch_size, progress)
    for record, parent_record in zip(ours, theirs):
        record["parent_prediction"] = parent_record["prediction"]
    predictions = [r["prediction"] for r in ours]
    vs_reference = rouge(predictions, [r["reference"] for r in ours])
    vs_parent = rouge(predictions, [r["prediction"] for r in theirs])
    parent_vs_reference = rouge([r["prediction"] for r in theirs], [r["reference"] for r in ours])
    metrics = {
        "generated_samples": len(ours),
        "rougeL": vs_reference["rougeL"],
        "parent_rougeL": parent_vs_reference["rougeL"],
        "rougeL_vs_parent": vs_parent["rougeL"],
        "identical_to_parent": sum(r["prediction"] == r["parent_prediction"] for r in ours) / len(ours),
    }
    return metrics, ours
