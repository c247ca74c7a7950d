"""An A/B-serving app over fake backends, one backend per loaded reference (so a test can tell them apart)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from fastapi.testclient import TestClient

from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
from tests.unit.serve.conftest import FakeBackend

API_KEY = "ab-key"


class BrokenBackend(FakeBackend):
    """Every prefill raises: a shadow candidate that fails on every request."""

    def prefill(self, prompts: list[list[int]]) -> Any:
        raise RuntimeError("the shadow candidate is broken")


class BlockedBackend(FakeBackend):
    """The prefill waits for `unblock`: a shadow candidate slower than any traffic."""

    unblock = threading.Event()

    def prefill(self, prompts: list[list[int]]) -> Any:
        BlockedBackend.unblock.wait(60)
        return super().prefill(prompts)


class GatedBackend(FakeBackend):
    """Every decode step waits for `gate`: an engine whose requests stay in flight until a test lets them go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def decode(self, state: Any, tokens: Any) -> Any:
        assert self.gate.wait(60), "the test never opened the gate"
        return super().decode(state, tokens)


class Loads:
    """The loader: a new backend per load, remembered in order. 'unloadable*' refs raise at load time, 'gated*'
    refs decode only once their gate is open, 'shadow-broken' and 'shadow-blocked' are shadows that fail or hang."""

    def __init__(self, tokenizer: Any, step_s: float = 0.001) -> None:
        self.tokenizer, self.step_s = tokenizer, step_s
        self.loaded: list[tuple[str, FakeBackend]] = []
        self.lock = threading.Lock()

    def __call__(self, ref: str, opts: Any, backend: str) -> FakeBackend:
        if ref.startswith("unloadable"):
            raise RuntimeError(f"cannot load {ref}")
        cls = {"shadow-broken": BrokenBackend, "shadow-blocked": BlockedBackend, "gated": GatedBackend}.get(
            ref.split("-")[0] if ref.startswith("gated") else ref, FakeBackend)
        b = cls(self.tokenizer, step_s=self.step_s, max_model_len=256)
        with self.lock:
            b.info = {"backend": "fake", "ref": ref, "load": len(self.loaded)}
            self.loaded.append((ref, b))
        return b

    def refs(self) -> list[str]:
        return [r for r, _ in self.loaded]


def ab_settings(**fields: Any) -> ServeSettings:
    base: dict[str, Any] = {
        "models": {"plain": "plain-ref"},
        "ab": {"chat": {"variants": {"v1": {"model": "ref-a", "weight": 0.8}, "v2": {"model": "ref-b", "weight": 0.2}}}},
        "api_keys": [API_KEY], "device": "cpu", "warmup": False, "max_concurrency": 8, "max_queue": 64,
    }
    return ServeSettings.model_validate(base | fields)


@contextmanager
def ab_client(loads: Loads, settings: ServeSettings) -> Iterator[TestClient]:
    app = create_app(settings, loader=loads)
    threads = torch.get_num_threads()  # loading sets it process-wide
    with TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, lambda: client.get("/ready").text)
        yield client
    torch.set_num_threads(threads)


def wait_for(check: Any, why: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why() if callable(why) else why
        time.sleep(0.01)


def complete(client: TestClient, model: str = "chat", headers: dict[str, str] | None = None, **fields: Any) -> Any:
    body = {"model": model, "prompt": [9], "max_tokens": 1, **fields}
    return client.post("/v1/completions", json=body, headers=headers or {})


def metric_lines(client: TestClient, name: str) -> dict[str, float]:
    """{label text: value} of one metric's samples, e.g. {'model_name="chat",variant="v1"': 3.0}."""
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out[labels] = float(value)
    return out
