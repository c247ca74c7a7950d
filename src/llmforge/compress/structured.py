"""Structured pruning that really shrinks a model: MLP channels and attention heads are removed.

The result is a smaller standard transformers model (config updated) that loads with plain transformers. A
standard config has one width for every layer, so every layer loses the same number of channels and heads; which
ones is decided per layer by importance:

* `magnitude`: weight norms of the unit's rows/columns;
* `activation`: mean |activation| of the unit on calibration tokens times the norm of its output weights (the
  structured form of Wanda's |W| * ||X||).

Heads are removed with the key/value groups of GQA in mind: the same number of query heads leaves every group
(so each remaining query head keeps its key/value head), or whole groups go when a group has one query head.

Where the units live (separate or fused projections, nn.Linear or GPT-2's Conv1D) is the family's `Layout`
(`llmforge.models.channels`); a family without one is refused, as are heads where the family's config cannot
describe fewer of them (GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from llmforge.errors import LlmforgeError
from llmforge.models.channels import (
    Layout,
    blocks,
    fused_rows,
    head_importance,
    keep_channels,
    keep_cols,
    keep_rows,
    layout_of,
    mlp_importance,
    mlp_width,
)

STAGE = "structured pruning"


@dataclass(frozen=True)
class Plan:
    """How much to remove from every layer."""

    mlp_channels: int  # intermediate channels removed per layer
    heads_per_group: int  # query heads removed from each key/value group (n_rep > 1)
    groups: int  # whole key/value groups removed (n_rep == 1)


@dataclass(frozen=True)
class Shape:
    """A block's sizes, read from the config whatever the family calls them."""

    hidden: int
    width: int  # MLP intermediate size
    n_heads: int
    n_kv: int
    head_dim: int

    @classmethod
    def of(cls, config: Any, layout: Layout) -> Shape:
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads  # GPT-2: no GQA
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(config.hidden_size, mlp_width(config, layout), n_heads, n_kv, head_dim)


def _layout(config: Any) -> Layout:
    return layout_of(config, STAGE, "; prune.method=magnitude works for any architecture")


def block_parameters(model: Any) -> int:
    """Weights of the transformer blocks' linear layers (nn.Linear and Conv1D): what structured pruning can remove."""
    return sum(m.weight.numel() for block in blocks(model, _layout(model.config)) for m in block.modules()
               if isinstance(m, (nn.Linear, Conv1D)))


def plan(config: Any, sparsity: float, heads: bool) -> Plan:
    """Remove `sparsity` of the block weights: heads first (rounded down to what GQA allows), MLP channels fill
    the rest of the budget."""
    layout = _layout(config)
    s = Shape.of(config, layout)
    n_rep = s.n_heads // s.n_kv
    per_channel = s.hidden * (sum(n for _, n in layout.mlp_in) + 1)  # rows of the input projections + a column out
    attn = 2 * s.hidden * s.head_dim * (s.n_heads + s.n_kv)  # q, o + k, v
    budget = sparsity * (attn + per_channel * s.width)  # per layer
    per_head = 2 * s.hidden * s.head_dim
    heads_per_group = groups = 0
    if heads and n_rep > 1:
        heads_per_group = min(int(budget // (per_head * s.n_kv)), n_rep - 1)
    elif heads:
        groups = min(int(budget // (2 * per_head)), s.n_kv - 1)
    removed = per_head * s.n_kv * heads_per_group + 2 * per_head * groups
    channels = min(round((budget - removed) / per_channel), s.width - 1)
    return Plan(max(channels, 0), heads_per_group, groups)


@torch.no_grad()
def activation_stats(model: Any, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Per layer, mean |x| over real tokens of the inputs of the MLP's output projection (I,) and of the attention
    output projection (heads * D,)."""
    layout = _layout(model.config)
    layers = blocks(model, layout)
    stats: list[dict[str, torch.Tensor]] = [{} for _ in layers]
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

    for i, block in enumerate(layers):
        mlp_out = block.get_submodule(layout.mlp).get_submodule(layout.mlp_out)
        attn_out = block.get_submodule(layout.attn).get_submodule(layout.attn_out)
        hooks.append(mlp_out.register_forward_pre_hook(hook(i, "mlp")))
        hooks.append(attn_out.register_forward_pre_hook(hook(i, "attn")))
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


def _prune_heads(attn: nn.Module, layout: Layout, s: Shape, p: Plan, importance: torch.Tensor) -> None:
    n_rep = s.n_heads // s.n_kv
    by_group = importance.reshape(s.n_kv, n_rep)  # (n_kv, n_rep): query heads of each key/value group
    if p.heads_per_group:
        keep_rep = by_group.topk(n_rep - p.heads_per_group, dim=1).indices.sort(dim=1).values  # (n_kv, r')
        heads = (keep_rep + torch.arange(s.n_kv)[:, None] * n_rep).flatten()  # ascending, grouped by kv head
        kv = torch.arange(s.n_kv)
    else:
        kv = by_group.sum(dim=1).topk(s.n_kv - p.groups).indices.sort().values
        heads = (kv[:, None] * n_rep + torch.arange(n_rep)).flatten()
    d = torch.arange(s.head_dim)
    keep = {"q": (heads[:, None] * s.head_dim + d).flatten(), "k": (kv[:, None] * s.head_dim + d).flatten()}
    keep["v"] = keep["k"]
    sizes = {"q": s.n_heads * s.head_dim, "k": s.n_kv * s.head_dim, "v": s.n_kv * s.head_dim}
    for name, segments in layout.qkv:  # "qkv": one fused projection, rows q | k | v
        keep_rows(attn.get_submodule(name), fused_rows([keep[c] for c in segments], [sizes[c] for c in segments]))
    keep_cols(attn.get_submodule(layout.attn_out), keep["q"])
    # The attention module's own copies of the counts (Phi-3 splits its fused qkv with num_key_value_heads).
    counts = {"num_key_value_groups": len(heads) // len(kv), "num_key_value_heads": len(kv), "num_heads": len(heads)}
    for attr, value in counts.items():
        if hasattr(attn, attr):
            setattr(attn, attr, value)


def _update_config(config: Any, layout: Layout, s: Shape, p: Plan) -> None:
    if p.heads_per_group or p.groups:
        n_kv = s.n_kv - p.groups
        config.head_dim = s.head_dim  # no longer hidden_size // num_attention_heads
        config.num_attention_heads = n_kv * (s.n_heads // s.n_kv - p.heads_per_group)
        config.num_key_value_heads = n_kv
    setattr(config, layout.width, s.width - p.mlp_channels)


def prune_structured(model: Any, sparsity: float, heads: bool, stats: list[dict[str, torch.Tensor]] | None) -> dict:
    """Prune in place; return what was removed. `stats` from `activation_stats` (None: weight magnitude)."""
    config = model.config
    layout = _layout(config)
    if heads and not layout.head_config:
        raise LlmforgeError(
            f"{STAGE} cannot remove attention heads from '{config.model_type}' models: their config derives the head "
            "width from the hidden size and the head count, so a model with fewer heads would not reload; set "
            "prune.heads=false to remove MLP channels only"
        )
    s = Shape.of(config, layout)
    p = plan(config, sparsity, heads)
    before = block_parameters(model)
    for i, block in enumerate(blocks(model, layout)):
        act = stats[i] if stats else {}
        mlp = block.get_submodule(layout.mlp)
        if p.mlp_channels:
            score = mlp_importance(mlp, act.get("mlp"), layout)  # (I,)
            keep_channels(mlp, score.topk(s.width - p.mlp_channels).indices.sort().values, layout)
        if p.heads_per_group or p.groups:
            attn = block.get_submodule(layout.attn)
            per_head = act.get("attn")
            per_head = per_head.reshape(s.n_heads, s.head_dim).mean(dim=1) if per_head is not None else None
            _prune_heads(attn, layout, s, p, head_importance(attn, s.n_heads, s.head_dim, per_head, layout))
    _update_config(config, layout, s, p)
    after = block_parameters(model)
    return {"mlp_channels_removed_per_layer": p.mlp_channels, "intermediate_size": s.width - p.mlp_channels,
            "attention_heads": config.num_attention_heads, "key_value_heads": s.n_kv - p.groups,
            "block_weights_before": before, "block_weights_after": after,
            "block_sparsity": 1 - after / before}
