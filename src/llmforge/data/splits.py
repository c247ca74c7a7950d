"""Exact train / validation / test sizes from a seeded hash order.

Each record (or each group, with `split.group_by`) gets a number u in [0, 1) from a seeded hash of its key.
Ordered by u, the first round(N x test) keys are the test split, the next round(N x validation) the validation
split, the rest train; N is the number of distinct keys. So 5% / 10% of 400 records is exactly 20 / 40, where
drawing each record independently (u < 0.05) gives 15 one time and 23 another. The choice of records is as
random as the hash and stays the same for the same seed and data; with groups the sizes are exact in groups.
Rounding is half up: 2.5 records -> 3.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmforge.artifacts import read_manifest


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) that depends only on the seed and the key."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16) / 2**64


def share(n: int, fraction: float) -> int:
    """How many of `n` keys a fraction stands for: rounded half up, never more than n."""
    return min(n, math.floor(n * fraction + 0.5))


@dataclass(frozen=True)
class SplitPlan:
    """Thresholds on u: below `test_below` -> test, below `validation_below` -> validation, else train."""

    test_below: float
    validation_below: float
    counts: dict[str, int]

    def split(self, u: float) -> str:
        if u < self.test_below:
            return "test"
        if u < self.validation_below:
            return "validation"
        return "train"


def plan_splits(us: Any, test: float, validation: float) -> SplitPlan:
    """The thresholds that give exactly share(N, test) and share(N, validation) of the N distinct values in `us`."""
    ordered = np.unique(np.asarray(us, dtype=np.float64))  # sorted; a key seen twice counts once
    n = len(ordered)
    n_test = share(n, test)
    n_validation = min(n - n_test, share(n, validation))

    def below(k: int) -> float:
        return float(ordered[k]) if k < n else math.inf

    return SplitPlan(below(n_test), below(n_test + n_validation),
                     {"train": n - n_test - n_validation, "validation": n_validation, "test": n_test})


def load_split(prepared: Path, split: str) -> Any:
    """One split ('train', 'validation', 'test') of a prepared dataset run, as a `datasets.Dataset`."""
    from datasets import Dataset, Features, load_from_disk

    manifest = read_manifest(prepared)
    if manifest.get("kind") != "prepared-dataset":
        raise ValueError(f"{prepared} is a '{manifest.get('kind')}' run, not a prepared dataset")
    folder = Path(prepared) / split
    if not list(folder.glob("*.arrow")):  # an empty split is saved without data files, which datasets can't load
        features = Features.from_dict(json.loads((folder / "dataset_info.json").read_text())["features"])
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return load_from_disk(str(folder))
