"""Real tier: issue #19's features on the pulled SmolLM2-135M-Instruct through the real CLI, with its own tokenizer
and ChatML template: `rag index` + `serve --rag` (the openai client's chat, the simple /chat, sources), and DPO
(prepare preference pairs, train, then `llmforge eval` on the pairs reproducing training's held-out numbers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import write_jsonl
from tests.integration.test_cli import cli

pytestmark = pytest.mark.real
NAME = "smollm2-135m-instruct"
MODULES = ("heapq", "zipfile", "json/__init__", "csv")


def _docs(root: Path) -> Path:
    """Markdown pages made from installed standard-library modules' docstrings, one page per module."""
    import importlib

    docs = root / "docs"
    docs.mkdir()
    for name in MODULES:
        module = importlib.import_module(name.split("/")[0])
        parts = [f"# {module.__name__}\n\n{module.__doc__ or ''}"]
        for attr in sorted(getattr(module, "__all__", [])):
            doc = getattr(getattr(module, attr), "__doc__", None)
            if isinstance(doc, str) and doc.strip():
                parts.append(f"## {module.__name__}.{attr}\n\n{doc.strip()}")
        (docs / f"{module.__name__}.md").write_text("\n\n".join(parts), encoding="utf-8")
    return docs


@pytest.fixture(scope="module")
def served(pulled: Path, serve: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("faiss", reason="the rag extra is not installed")
    root = tmp_path_factory.mktemp("rag")
    _docs(root)
    cli("rag", "index", "docs", "-o", "kb", cwd=root)
    manifest = json.loads((root / "kb" / "manifest.json").read_text())
    assert manifest["rag"]["chunks"] > len(MODULES) and manifest["rag"]["index"]["type"] == "flat"
    return serve(NAME, "--rag", str(root / "kb"), "--rag-top-k", "2", cwd=root)


def test_chat_completion_names_the_passages_it_was_given(served: str) -> None:
    import openai

    client = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0, timeout=300)
    question = "How do I extract all members of a zip archive?"
    raw = client.chat.completions.with_raw_response.create(
        model=NAME, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0)
    reply = raw.parse()
    sources = reply.model_extra["sources"]
    assert [s["source"].rsplit("/", 1)[-1] for s in sources][:1] == ["zipfile.md"]
    assert json.loads(raw.headers["X-LLMforge-Sources"])[0]["id"] == sources[0]["id"]
    plain = httpx.post(served + "/tokenize", json={"model": NAME, "messages": [{"role": "user", "content": question}]})
    assert reply.usage.prompt_tokens > plain.json()["count"] + 50  # the passages went into the prompt
    assert reply.choices[0].message.content.strip()


def test_simple_chat_retrieves_too(served: str) -> None:
    r = httpx.post(served + "/chat", json={"message": "Which function pushes an item onto a heap?", "max_tokens": 30},
                   timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sources"][0]["source"].endswith("heapq.md") and body["response"].strip()


def _pairs() -> list[dict[str, Any]]:
    """A preference SmolLM2 already half-holds: the capital of a country named in full, against a wrong one."""
    capitals = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
                "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
                "Greece": "Athens", "Chile": "Santiago", "Cuba": "Havana", "Poland": "Warsaw", "India": "New Delhi",
                "China": "Beijing"}
    names = list(capitals)
    return [{"prompt": f"What is the capital of {c}?", "chosen": f"The capital of {c} is {capitals[c]}.",
             "rejected": f"The capital of {c} is {capitals[names[(i + 5) % len(names)]]}."}
            for i, c in enumerate(names)]


def test_dpo_on_smollm2_and_eval_on_the_pairs(pulled: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the pref extra is not installed")
    write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    cli("prepare", "--data", "pairs.jsonl", "--model", NAME, "--output", "prep", "--set", "data.split.validation=0.25",
        "--set", "data.split.test=0", cwd=tmp_path)
    cli("train", "--model", NAME, "--data", "prep", "--method", "dpo", "--output", "dpo", "--max-steps", "3",
        "--set", "train.batch_size=4", "--set", "train.precision=fp32", cwd=tmp_path)
    trained = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert trained["eval_pairs"] == 4 and trained["train_tokens"] > 0
    cli("eval", "--model", "dpo", "--data", "prep", "--split", "validation", "--output", "ev", cwd=tmp_path)
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert scored["pairs"] == 4 and "adapter off" in scored["reference"]
    for key in ("reward_accuracy", "reward_margin", "logp_margin"):
        assert scored[key] == pytest.approx(trained[f"eval_{key}"], abs=2e-3), key
