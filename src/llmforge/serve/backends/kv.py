"""A batch of sequences decoding together over a left-padded KV cache.

Rows are right-aligned: every row's newest token sits in the last column, so one decode step appends one
column for all rows. A row's position ids count only its real tokens, and padding is masked out, so a row
computes the same numbers alone or in a batch. Rows join (prefilled elsewhere, padded to a common width)
and leave (finished or cancelled) between decode steps; columns that only padding still uses are dropped.

The layers are any objects with `keys` and `values` tensors of shape (B, H, T, D): transformers'
`DynamicLayer`, or `KVLayer` for runtimes that hand back plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class KVLayer:
    keys: torch.Tensor  # (B, H, T, D)
    values: torch.Tensor  # (B, H, T, D)


@dataclass
class PaddedBatch:
    layers: list[Any]  # per layer: .keys, .values (B, H, T, D)
    mask: torch.Tensor  # (B, T) 1 where a real token is cached
    lengths: torch.Tensor  # (B,) real tokens per row: the next token's position id
    handle: Any = None  # the backend's own cache object over `layers` (e.g. a DynamicCache)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, mask), both (B, W): prompts right-aligned, padding on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)  # (B, W)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)  # (B, W)
    return ids, mask


def prefill_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only; padding gets 0 (it is masked anyway)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, W)


def _pad_time(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def join(a: PaddedBatch, b: PaddedBatch) -> PaddedBatch:
    """Rows of `b` appended after the rows of `a` (in place on `a`'s layers), padded to a common width."""
    ta, tb = a.mask.shape[1], b.mask.shape[1]
    width = max(ta, tb)
    for la, lb in zip(a.layers, b.layers):
        la.keys = torch.cat([_pad_time(la.keys, width - ta, 2), _pad_time(lb.keys, width - tb, 2)], dim=0)
        la.values = torch.cat([_pad_time(la.values, width - ta, 2), _pad_time(lb.values, width - tb, 2)], dim=0)
    a.mask = torch.cat([_pad_time(a.mask, width - ta, 1), _pad_time(b.mask, width - tb, 1)], dim=0)
    a.lengths = torch.cat([a.lengths, b.lengths])
    return a


def select(batch: PaddedBatch, rows: list[int]) -> PaddedBatch | None:
    """Keep only `rows` (in that order); None when no row is left."""
    if not rows:
        return None
    if rows == list(range(batch.rows)):
        return batch
    idx = torch.tensor(rows, device=batch.mask.device)
    mask = batch.mask[idx]  # (R, T)
    start = int(mask.any(0).long().argmax())  # first column a remaining row still uses
    for layer in batch.layers:
        layer.keys = layer.keys[idx, :, start:]
        layer.values = layer.values[idx, :, start:]
    batch.mask = mask[:, start:]
    batch.lengths = batch.lengths[idx]
    return batch


def grow(batch: PaddedBatch) -> torch.Tensor:
    """The attention mask for one more decode step: the cached columns plus the token being fed."""
    return torch.cat([batch.mask, batch.mask.new_ones(batch.rows, 1)], dim=1)  # (B, T + 1)
