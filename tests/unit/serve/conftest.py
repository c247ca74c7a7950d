"""A fake backend for the engine and the HTTP app: the tiny model's tokenizer, logits from a fixed random table.

Fast and deterministic (nanochat tests its engine the same way, with a model that returns fixed logits). Rows
can be steered by their prompt's last token: `nan_token` gives NaN logits (a broken row), `boom_token` makes the
prefill raise, and a row whose prompt ends in `hold_token` never samples eos until `release` is set (a victim that
is certainly running meanwhile).

With `context=True` (the engine tests) each row's logits also depend on everything that row has seen, prompt
and fed tokens, kept in its state as a KV cache would be: an engine that joins, selects or feeds rows out of
order then produces other tokens, as it would on a real model, and a decode whose state and tokens disagree in
length raises, as a real KV cache's shapes would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings

API_KEY = "test-key"


class FakeBackend:
    name = "fake"

    def __init__(self, tokenizer: Any, step_s: float = 0.0, max_model_len: int = 1 << 20,
                 context: bool = False) -> None:
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer)
        self.max_model_len = max_model_len
        self.eos = int(tokenizer.eos_token_id)
        self.eos_token_ids = frozenset({self.eos})
        self.table = torch.randn(self.vocab, self.vocab, generator=torch.Generator().manual_seed(0))  # (V, V)
        self.table[:, self.eos] = -1e4  # eos only when a test asks for it
        self.nan_token = self.vocab - 1
        self.hold_token = self.vocab - 2
        self.boom_token = self.vocab - 3
        self.release = threading.Event()
        self.step_s = step_s
        self.context = context
        self.info = {"backend": self.name}

    @staticmethod
    def _seen(digest: int, token: int) -> int:
        return (digest * 1_000_003 + token + 1) % ((1 << 61) - 1)

    def _logits(self, rows: list[dict[str, int]], last: list[int]) -> torch.Tensor:
        out = self.table[torch.tensor(last)].clone()  # (B, V)
        if self.context:  # and on the row's whole history: a row fed another row's state decodes differently
            out += self.table[torch.tensor([row["seen"] % self.vocab for row in rows])]
        for i, row in enumerate(rows):
            if row["tag"] == self.nan_token:
                out[i] = float("nan")
            elif row["tag"] == self.hold_token and self.release.is_set():
                out[i, self.eos] = 1e4
        return out

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, list[dict[str, int]]]:
        if any(p[-1] == self.boom_token for p in prompts):
            raise RuntimeError("boom: this prompt breaks the model")  # as an out-of-range id would in an embedding
        rows = []
        for p in prompts:
            seen = 0
            for token in p:
                seen = self._seen(seen, token)
            rows.append({"tag": p[-1], "seen": seen})
        return self._logits(rows, [p[-1] for p in prompts]), rows

    def decode(self, state: list[dict[str, int]], tokens: torch.Tensor) -> torch.Tensor:
        if self.step_s:
            time.sleep(self.step_s)  # keeps a long-running victim from spinning a core
        fed = tokens.tolist()
        if len(fed) != len(state):
            raise RuntimeError(f"decode got {len(fed)} tokens for a state of {len(state)} rows")
        for row, token in zip(state, fed):
            row["seen"] = self._seen(row["seen"], token)  # in place, as a KV cache grows
        return self._logits(state, fed)

    def join(self, state: list[dict[str, int]], other: list[dict[str, int]]) -> list[dict[str, int]]:
        return state + other

    def select(self, state: list[dict[str, int]], rows: list[int]) -> list[dict[str, int]] | None:
        return [state[i] for i in rows] if rows else None


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture()
def fake_backend(tiny_tokenizer: Any) -> FakeBackend:
    return FakeBackend(tiny_tokenizer, step_s=0.002, max_model_len=256)


@pytest.fixture()
def fake_client(fake_backend: FakeBackend) -> Iterator[TestClient]:
    """The real app over the fake backend, in process, with its lifespan (loading, warm-up, shutdown)."""
    settings = ServeSettings(models={"fake": "fake"}, api_keys=[API_KEY], device="cpu", warmup=False,
                             max_concurrency=8, max_queue=16)
    app = create_app(settings, loader=lambda ref, opts, backend: fake_backend)
    threads = torch.get_num_threads()  # loading sets it process-wide
    with TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.01)
        yield client
    torch.set_num_threads(threads)
