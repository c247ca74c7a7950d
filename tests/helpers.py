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


FRESH_GENERATE = """
import json, sys, torch
from llmforge.config import ModelConfig
from llmforge.models.loader import load_model
model, tok = load_model(ModelConfig(name_or_path=sys.argv[1]))
ids = tok("reverse: alpha beta", return_tensors="pt")["input_ids"]
out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                     do_sample=False, pad_token_id=tok.pad_token_id)
print(json.dumps(out[0, ids.shape[1]:].tolist()))
"""


def generate_in_fresh_process(model: str | Path) -> list[int]:
    """Load `model` with llmforge in a new interpreter and greedily generate 6 tokens: the artifact stands alone."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FRESH_GENERATE, str(model)], capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"loading {model} in a fresh process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
