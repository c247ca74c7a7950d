"""The lint report of a prepare run: what was read, kept and dropped, lengths, trainable tokens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


class LengthStats:
    """Token lengths of the kept samples as counts per length, and their trainable tokens.

    Exact percentiles (numpy's linear method) in memory that does not grow with the number of samples: one
    counter per length, and kept samples are at most data.max_length tokens long.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)
        self.trainable = 0

    def add(self, length: int, trainable: int) -> None:
        if length >= len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(length + 1 - len(self.counts), dtype=np.int64)])
        self.counts[length] += 1
        self.trainable += trainable

    @property
    def samples(self) -> int:
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        return int((np.arange(len(self.counts)) * self.counts).sum())

    def _at(self, cumulative: np.ndarray, index: int) -> int:
        """The length at position `index` of the sorted lengths."""
        return int(np.searchsorted(cumulative, index, side="right"))

    def _percentile(self, cumulative: np.ndarray, q: float) -> float:
        n = int(cumulative[-1])
        pos = q / 100 * (n - 1)
        lo = int(np.floor(pos))
        a, b, t = self._at(cumulative, lo), self._at(cumulative, min(lo + 1, n - 1)), pos - lo
        return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)  # numpy's _lerp

    def percentiles(self) -> dict[str, float]:
        n = self.samples
        if not n:
            return {}
        cumulative = np.cumsum(self.counts)
        present = np.flatnonzero(self.counts)
        return {
            "min": int(present[0]), "p50": self._percentile(cumulative, 50), "p90": self._percentile(cumulative, 90),
            "p99": self._percentile(cumulative, 99), "max": int(present[-1]), "mean": self.total / n,
        }


def lint_report(
    lengths: LengthStats,
    samples: dict[str, int],
    read: int,
    dropped: Counter[str],
    kinds: Counter[str],
    *,
    truncated: int,
    chunked: int,
    max_length: int,
    overlong: str,
    split_sources: dict[str, str],
) -> dict[str, Any]:
    total = lengths.total
    return {
        "records_read": read,
        "records_kept": sum(kinds.values()) - sum(v for k, v in dropped.items() if k in _POST_SPLIT),
        "samples": samples,
        "split_sources": split_sources,
        "dropped": dict(sorted(dropped.items())),
        "kinds": dict(kinds),
        "overlong_policy": overlong,
        "max_length": max_length,
        "truncated": truncated,
        "chunked": chunked,
        "tokens": {"total": total, "trainable": lengths.trainable, **lengths.percentiles()},
        "trainable_token_fraction": lengths.trainable / total if total else 0.0,
    }


# Drop reasons that happen after a record was accepted into a split (the rest happen before).
_POST_SPLIT = {"too_long", "zero_trainable_tokens", "no_trainable_tokens_after_truncation"}


def save_length_histogram(lengths: LengthStats, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    present = np.flatnonzero(lengths.counts)  # the same bins as a histogram of every length
    if len(present):
        ax.hist(present, bins=50, weights=lengths.counts[present], color="#4C72B0")
    else:
        ax.hist([0], bins=50, color="#4C72B0")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title("Token lengths")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
