"""Test helpers: small deterministic corpora and records (no network, no hub)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega def return class import print value list dict").split()


def corpus(n: int = 400) -> list[str]:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]
    return texts + ["héllo wörld ✓ 日本語 🙂", "def f(x):\n    return x * 2\n"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def qa_records(n: int = 120) -> list[dict]:
    """A learnable task: the answer repeats the question's words in reverse order."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        out.append({"input": "reverse: " + " ".join(words), "output": " ".join(reversed(words)), "id": i})
    return out
