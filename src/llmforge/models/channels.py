"""Which channels and heads of a Llama-style block matter, and how to keep only some of them.

Shared by structured pruning (`llmforge.compress.structured`) and by distillation, which derives a narrower
student from its teacher (`llmforge.train.distill`). Importance is `magnitude` (weight norms of the unit's rows and
columns) or, given calibration activations, mean |activation| times the norm of the unit's output weights.
"""

from __future__ import annotations

import torch
from torch import nn


def keep_channels(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Shrink a Llama-style MLP (gate/up: (I, H), down: (H, I)) to the intermediate channels in `keep`."""
    for name in ("gate_proj", "up_proj"):
        keep_rows(getattr(mlp, name), keep)
    keep_cols(mlp.down_proj, keep)


def keep_rows(layer: nn.Linear, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[keep].clone())
    layer.out_features = len(keep)


def keep_cols(layer: nn.Linear, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
    layer.in_features = len(keep)


def mlp_importance(mlp: nn.Module, activation: torch.Tensor | None) -> torch.Tensor:
    """(I,) importance of each intermediate channel; `activation` is mean |input of down_proj| (I,)."""
    down = mlp.down_proj.weight.norm(dim=0)  # (I,)
    if activation is not None:
        return activation * down
    return mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * down


def head_importance(attn: nn.Module, n_heads: int, head_dim: int, activation: torch.Tensor | None) -> torch.Tensor:
    """(n_heads,) importance of each query head; `activation` is mean |input of o_proj| per head (n_heads,)."""
    o = attn.o_proj.weight.reshape(attn.o_proj.weight.shape[0], n_heads, head_dim)  # (H, n_heads, D)
    out_norm = o.norm(dim=(0, 2))  # (n_heads,)
    if activation is not None:
        return activation * out_norm
    q = attn.q_proj.weight.reshape(n_heads, head_dim, -1).norm(dim=(1, 2))  # (n_heads,)
    return q * out_norm
