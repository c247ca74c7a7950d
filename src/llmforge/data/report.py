"""The lint report of a prepare run: what was read, kept and dropped, lengths, trainable tokens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llmforge.data.tokenize import IGNORE


def _percentiles(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    arr = np.asarray(lengths)
    return {
        "min": int(arr.min()), "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)), "max": int(arr.max()), "mean": float(arr.mean()),
    }


def lint_report(
    columns: dict[str, dict[str, list[Any]]],
    read: int,
    dropped: Counter[str],
    kinds: Counter[str],
    preference: dict[str, dict[str, list[str]]],
    *,
    truncated: int,
    chunked: int,
    max_length: int,
    overlong: str,
) -> dict[str, Any]:
    lengths = [len(ids) for cols in columns.values() for ids in cols["input_ids"]]
    total = sum(lengths)
    trainable = int(sum((np.asarray(labels) != IGNORE).sum() for cols in columns.values() for labels in cols["labels"]))
    return {
        "records_read": read,
        "records_kept": sum(kinds.values()) - sum(v for k, v in dropped.items() if k in _POST_SPLIT),
        "samples": {split: len(cols["input_ids"]) + len(preference[split]["prompt"])
                    for split, cols in columns.items()},
        "dropped": dict(sorted(dropped.items())),
        "kinds": dict(kinds),
        "overlong_policy": overlong,
        "max_length": max_length,
        "truncated": truncated,
        "chunked": chunked,
        "tokens": {"total": total, "trainable": trainable, **_percentiles(lengths)},
        "trainable_token_fraction": trainable / total if total else 0.0,
    }


# Drop reasons that happen after a record was accepted into a split (the rest happen before).
_POST_SPLIT = {"too_long", "zero_trainable_tokens", "no_trainable_tokens_after_truncation"}


def save_length_histogram(lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(lengths or [0], bins=50, color="#4C72B0")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title("Token lengths")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
