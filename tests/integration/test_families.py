"""A user's own directory of each family (its tokenizer kind and chat template in tokenizer_config.json) through
the real CLI with no extra flags: prepare -> LoRA train (merged) -> export ONNX and GGUF (parity) -> serve, asked
with the openai client; the served export answers as the trained model does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.families import FAMILIES, build_family
from tests.helpers import write_jsonl
from tests.integration.test_cli import cli

PROMPT = "reverse: alpha beta gamma delta"


def _chats(n: int = 60) -> list[dict]:
    import random

    rng, words = random.Random(0), "alpha beta gamma delta epsilon zeta eta theta".split()
    out = []
    for _ in range(n):
        q = [rng.choice(words) for _ in range(4)]
        out.append({"messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "reverse: " + " ".join(q)},
                                 {"role": "assistant", "content": " ".join(reversed(q))}]})
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_family_prepare_train_export_serve(family: str, tmp_path: Path) -> None:
    from llmforge.serve.check import serve_check

    model = build_family(family, tmp_path)
    write_jsonl(tmp_path / "chats.jsonl", _chats())
    cli("prepare", "--data", "chats.jsonl", "--model", str(model), "--output", "prep", cwd=tmp_path)
    cli("train", "--model", str(model), "--data", "prep", "--output", "train", "--max-steps", "3",
        "--set", "train.merge=true", cwd=tmp_path)
    cli("export", "--model", "train", "--data", "prep", "-f", "onnx", "-f", "gguf-f16", "--output", "export",
        cwd=tmp_path)
    formats = json.loads((tmp_path / "export" / "metrics.json").read_text())["formats"]
    assert formats["onnx"]["passed"] and formats["onnx"]["greedy_identical"], formats["onnx"]
    assert formats["gguf-f16"]["passed"] is not False, formats["gguf-f16"]  # None: llama.cpp not installed
    trained = serve_check(tmp_path / "train", PROMPT, max_tokens=8, requests=1)
    exported = serve_check(tmp_path / "export" / "onnx", PROMPT, max_tokens=8, requests=1)
    assert trained["clean_shutdown"] and exported["clean_shutdown"]
    assert exported["reply"] == trained["reply"]  # greedy: the same model in another runtime
    assert exported["usage"]["prompt_tokens"] == trained["usage"]["prompt_tokens"]  # rendered with the same template
