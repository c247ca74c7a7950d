"""Limits under load: overload answers 429/503 with Retry-After, abandoned requests are cancelled, timeouts.

Generations are slowed down (a real backend sleeping at each decode step), so a request is reliably still
running while the next one arrives. Assertions are on outcomes and counters, never on tight timings.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from llmforge.serve.backends import load_backend
from tests.integration.serve.conftest import slow_loader

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "Tell me a long story."}]
LONG = {"max_tokens": 200, "temperature": 0, "extra_body": {"ignore_eos": True}}
SETTLE_S = 30  # generous bound for the server to reach an expected state


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_overload_gets_429_with_retry_after(make_server: Any) -> None:
    s = make_server(loader=slow_loader(0.02), max_concurrency=1, max_queue=1)
    client = s.client()
    running = client.chat.completions.create(model="tiny", messages=CHAT, stream=True, **LONG)
    queued = client.chat.completions.create(model="tiny", messages=CHAT, stream=True, **LONG)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
        assert refused.value.response.headers["retry-after"] == "1"
        assert refused.value.response.json()["error"]["type"] == "rate_limit_error"
        assert s.metric("vllm:num_requests_running") + s.metric("vllm:num_requests_waiting") == 2
    finally:
        running.close()
        queued.close()
    wait_for(lambda: s.metric("vllm:num_requests_running") == 0, "the slots to free")
    ok = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
    assert ok.choices[0].message is not None


def test_abandoned_streams_are_cancelled_and_the_next_request_is_served(make_server: Any) -> None:
    s = make_server(loader=slow_loader(0.02), max_concurrency=2, max_queue=8)
    client = s.client()
    streams = [client.chat.completions.create(model="tiny", messages=CHAT, stream=True, **LONG) for _ in range(6)]
    next(iter(streams[0]))  # the first is generating
    for stream in streams:
        stream.close()  # the client goes away mid-generation (or while queued)
    wait_for(lambda: s.metric("vllm:num_requests_running") + s.metric("vllm:num_requests_waiting") == 0,
             "abandoned requests to leave the engine")
    # Unabandoned, six 200-token requests would generate 1200 tokens; cancelled ones stop within a few steps.
    assert s.metric("vllm:generation_tokens_total") < 200
    served = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3,
                                            extra_body={"ignore_eos": True})
    assert served.usage.completion_tokens == 3


def test_non_streaming_client_that_leaves_is_cancelled(make_server: Any) -> None:
    s = make_server(loader=slow_loader(0.02))
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 200, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(s.url + "/v1/chat/completions", json=body, headers=s.headers, timeout=0.5)
    wait_for(lambda: s.metric("vllm:num_requests_running") == 0, "the abandoned request to leave")
    assert s.metric("vllm:generation_tokens_total") < 200


def test_request_timeout(make_server: Any) -> None:
    s = make_server(loader=slow_loader(0.02), request_timeout_s=0.3)
    client = s.client()
    with pytest.raises(openai.APIStatusError) as timed_out:
        client.chat.completions.create(model="tiny", messages=CHAT, **LONG)
    assert timed_out.value.status_code == 504 and timed_out.value.response.json()["error"]["code"] == "timeout"
    stream = client.chat.completions.create(model="tiny", messages=CHAT, stream=True, **LONG)
    with pytest.raises(openai.APIError, match="did not finish"):
        list(stream)


def test_loading_and_failed_models_answer_503_with_retry_after(make_server: Any, tiny_model_dir: Any) -> None:
    gate = threading.Event()

    def gated(ref: str, opts: Any, backend: str) -> Any:
        if ref == "/no/such/model":
            raise FileNotFoundError("no such model directory")
        gate.wait(SETTLE_S)
        return load_backend(ref, opts, backend)

    s = make_server(loader=gated, wait_ready=False, models={"tiny": str(tiny_model_dir), "broken": "/no/such/model"})
    client = s.client()
    try:
        assert s.http.get("/health").json()["model_loaded"] is False
        not_ready = s.http.get("/ready")
        assert not_ready.status_code == 503 and "retry-after" in not_ready.headers
        with pytest.raises(openai.APIStatusError) as loading:
            client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
        assert loading.value.status_code == 503 and "still loading" in loading.value.message
        assert "retry-after" in loading.value.response.headers
    finally:
        gate.set()
    wait_for(lambda: s.http.get("/health").json()["models"] == {"tiny": "ready", "broken": "failed"}, "loading")
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).usage.completion_tokens >= 1
    with pytest.raises(openai.APIStatusError, match="no such model directory") as broken:
        client.chat.completions.create(model="broken", messages=CHAT, max_tokens=2)
    assert broken.value.status_code == 503
    assert "broken" in s.http.get("/ready").json()["error"]["message"]


def test_failures_inside_the_server_are_500s_with_openai_bodies(make_server: Any) -> None:
    class Broken:
        """Tokenizing text crashes (a bug), prefilling fails (a backend error)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.tokenizer = type("Tok", (), {"__len__": lambda _: len(inner.tokenizer),
                                              "__call__": lambda *a, **k: 1 / 0})()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def prefill(self, prompts: list[list[int]]) -> Any:
            raise RuntimeError("backend exploded")

    s = make_server(loader=lambda ref, opts, backend: Broken(load_backend(ref, opts, backend)), warmup=False)
    crash = s.http.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert crash.status_code == 500 and crash.json()["error"]["code"] == "internal_error"
    assert crash.headers["x-request-id"]
    failed = s.http.post("/v1/completions", json={"model": "tiny", "prompt": [5, 6]})
    assert failed.status_code == 500 and "backend exploded" in failed.json()["error"]["message"]
