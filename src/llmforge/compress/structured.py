"""Structured pruning that really shrinks a Llama-style model: MLP channels and attention heads are removed.

The result is a smaller standard transformers model (config updated) that loads with plain transformers. A
standard config has one width for every layer, so every layer loses the same number of channels and heads; which
ones is decided per layer by importance:

* `magnitude`: weight norms of the unit's rows/columns;
* `activation`: mean |activation| of the unit on calibration tokens times the norm of its output weights (the
  structured form of Wanda's |W| * ||X||).

Heads are removed with the key/value groups of GQA in mind: the same number of query heads leaves every group
(so each remaining query head keeps its key/value head), or whole groups go when a group has one query head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmforge.errors import LlmforgeError
from llmforge.models.channels import head_importance, keep_channels, keep_cols, keep_rows, mlp_importance


@dataclass(frozen=True)
class Plan:
    """How much to remove from every layer."""

    mlp_channels: int  # intermediate channels removed per layer
    heads_per_group: int  # query heads removed from each key/value group (n_rep > 1)
    groups: int  # whole key/value groups removed (n_rep == 1)


def block_parameters(model: Any) -> int:
    """Weights of the transformer blocks' linear layers: what structured pruning can remove."""
    return sum(m.weight.numel() for layer in model.model.layers for m in layer.modules() if isinstance(m, nn.Linear))


def plan(config: Any, sparsity: float, heads: bool) -> Plan:
    """Remove `sparsity` of the block weights: heads first (rounded down to what GQA allows), MLP channels fill
    the rest of the budget."""
    hidden, inter = config.hidden_size, config.intermediate_size
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    n_rep = n_heads // n_kv
    attn = 2 * hidden * head_dim * (n_heads + n_kv)  # q, o + k, v
    budget = sparsity * (attn + 3 * hidden * inter)  # per layer
    per_head = 2 * hidden * head_dim
    heads_per_group = groups = 0
    if heads and n_rep > 1:
        heads_per_group = min(int(budget // (per_head * n_kv)), n_rep - 1)
    elif heads:
        groups = min(int(budget // (2 * per_head)), n_kv - 1)
    removed = per_head * n_kv * heads_per_group + 2 * per_head * groups
    channels = min(round((budget - removed) / (3 * hidden)), inter - 1)
    return Plan(max(channels, 0), heads_per_group, groups)


@torch.no_grad()
def activation_stats(model: Any, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Per layer, mean |x| over real tokens of the inputs of down_proj (I,) and o_proj (heads * D,)."""
    stats: list[dict[str, torch.Tensor]] = [{} for _ in model.model.layers]
    mask_holder: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(i: int, key: str) -> Any:
        def fn(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].abs().float()  # (B, T, C)
            m = mask_holder["mask"].unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            total = (x * m).sum(dim=(0, 1))  # (C,)
            prev = stats[i].get(key)
            stats[i][key] = total if prev is None else prev + total

        return fn

    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(hook(i, "mlp")))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(hook(i, "attn")))
    tokens = 0
    try:
        for batch in batches:
            mask_holder["mask"] = batch["attention_mask"]
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
            tokens += int(batch["attention_mask"].sum())
    finally:
        for h in hooks:
            h.remove()
    return [{k: v / max(tokens, 1) for k, v in s.items()} for s in stats]


def _prune_heads(attn: nn.Module, config: Any, p: Plan, importance: torch.Tensor) -> None:
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    n_rep = n_heads // n_kv
    by_group = importance.reshape(n_kv, n_rep)  # (n_kv, n_rep): query heads of each key/value group
    if p.heads_per_group:
        keep_rep = by_group.topk(n_rep - p.heads_per_group, dim=1).indices.sort(dim=1).values  # (n_kv, r')
        heads = (keep_rep + torch.arange(n_kv)[:, None] * n_rep).flatten()  # ascending, grouped by kv head
        kv = torch.arange(n_kv)
    else:
        kv = by_group.sum(dim=1).topk(n_kv - p.groups).indices.sort().values
        heads = (kv[:, None] * n_rep + torch.arange(n_rep)).flatten()
    rows = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
    kv_rows = (kv[:, None] * head_dim + torch.arange(head_dim)).flatten()
    keep_rows(attn.q_proj, rows)
    keep_cols(attn.o_proj, rows)
    if p.groups:
        keep_rows(attn.k_proj, kv_rows)
        keep_rows(attn.v_proj, kv_rows)
    attn.num_key_value_groups = len(heads) // len(kv)


def prune_structured(model: Any, sparsity: float, heads: bool, stats: list[dict[str, torch.Tensor]] | None) -> dict:
    """Prune in place; return what was removed. `stats` from `activation_stats` (None: weight magnitude)."""
    config = model.config
    if getattr(config, "model_type", None) not in ("llama", "mistral", "qwen2", "qwen3"):
        raise LlmforgeError(
            f"structured pruning supports Llama-style models (llama, mistral, qwen2, qwen3), not "
            f"'{getattr(config, 'model_type', None)}'; use prune.method magnitude for other architectures"
        )
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    p = plan(config, sparsity, heads)
    before = block_parameters(model)
    for i, layer in enumerate(model.model.layers):
        s = stats[i] if stats else {}
        if p.mlp_channels:
            score = mlp_importance(layer.mlp, s.get("mlp"))
            keep_channels(layer.mlp, score.topk(config.intermediate_size - p.mlp_channels).indices.sort().values)
        if p.heads_per_group or p.groups:
            act = s.get("attn")
            act = act.reshape(n_heads, head_dim).mean(dim=1) if act is not None else None
            _prune_heads(layer.self_attn, config, p, head_importance(layer.self_attn, n_heads, head_dim, act))
    n_kv_new = n_kv - p.groups
    config.head_dim = head_dim  # no longer hidden_size // num_attention_heads
    config.num_attention_heads = n_kv_new * (n_heads // n_kv - p.heads_per_group)
    config.num_key_value_heads = n_kv_new
    config.intermediate_size -= p.mlp_channels
    after = block_parameters(model)
    return {"mlp_channels_removed_per_layer": p.mlp_channels, "intermediate_size": config.intermediate_size,
            "attention_heads": config.num_attention_heads, "key_value_heads": n_kv_new,
            "block_weights_before": before, "block_weights_after": after,
            "block_sparsity": 1 - after / before}
