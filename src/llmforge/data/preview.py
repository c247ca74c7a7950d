"""Show prepared samples as the model sees them: which pieces are trained on and which are context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmforge.data.tokenize import IGNORE


def segments(tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Split a sample into runs of (decoded text, trainable?) so a viewer can highlight the trained parts."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):
        if i == len(input_ids) or (labels[i] != IGNORE) != (labels[start] != IGNORE):
            text = tokenizer.decode(input_ids[start:i], skip_special_tokens=False)
            runs.append((text, labels[start] != IGNORE))
            start = i
    return runs


def preview(prepared: Path, tokenizer: Any, n: int, split: str = "train") -> list[list[tuple[str, bool]]]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(Path(prepared) / split))
    rows = dataset.select(range(min(n, len(dataset))))
    return [segments(tokenizer, list(r["input_ids"]), list(r["labels"])) for r in rows]
