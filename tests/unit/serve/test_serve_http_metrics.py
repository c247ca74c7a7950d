"""`http_requests_total{method, handler, status}` over HTTP, on the fake backend: every response counted once with
its route template and exact status, refusals answered before routing (401, 413) included, unknown paths under one
label value, and a stream counted as it starts."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, str, str]  # (method, handler, status)


def counts(client: Any) -> dict[Key, float]:
    text = client.get("/metrics").text
    return {(s.labels["method"], s.labels["handler"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "http_requests"
            for s in family.samples if s.name == "http_requests_total"}


def added(before: dict[Key, float], after: dict[Key, float]) -> dict[Key, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_each_response_is_counted_by_route_template_and_status(fake_client: Any) -> None:
    chat = {"model": "fake", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    before = counts(fake_client)
    assert fake_client.get("/v1/models").status_code == 200
    assert fake_client.post("/v1/chat/completions", json=chat,
                            headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert fake_client.post("/v1/chat/completions", json={**chat, "model": "nope"}).status_code == 404
    assert fake_client.get("/no/such/path").status_code == 404
    assert fake_client.get("/v1/models/another-unknown-path").status_code == 404
    big = fake_client.post("/v1/completions", content=b"x" * ((1 << 20) + 1),
                           headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert fake_client.post("/v1/completions", json={"model": "fake", "prompt": [9],
                                                     "max_tokens": "two"}).status_code == 400
    assert fake_client.get("/v1/chat/completions").status_code == 405
    assert fake_client.request("BREW", "/v1/models").status_code == 405
    assert added(before, counts(fake_client)) == {
        ("GET", "/metrics", "200"): 1,  # the scrape that read `before`
        ("GET", "/v1/models", "200"): 1,
        ("POST", "/v1/chat/completions", "401"): 1,  # refused by the key check, before routing
        ("POST", "/v1/chat/completions", "404"): 1,  # an unknown model
        ("GET", "none", "404"): 2,  # unknown paths: one label value, never the raw path
        ("POST", "/v1/completions", "413"): 1,  # refused by the body limit, before routing
        ("POST", "/v1/completions", "400"): 1,  # an invalid body (OpenAI's 400, not FastAPI's 422)
        ("GET", "/v1/chat/completions", "405"): 1,
        ("other", "/v1/models", "405"): 1,  # methods are a closed set too
    }


def test_a_stream_is_counted_once_as_it_starts(fake_client: Any, fake_backend: Any) -> None:
    fake_backend.max_model_len = 1 << 20  # the stream runs until released
    key = ("POST", "/v1/completions", "200")
    before = counts(fake_client)
    streamed: dict[str, Any] = {}

    def stream() -> None:
        body = {"model": "fake", "prompt": [5, fake_backend.hold_token], "max_tokens": 100_000, "stream": True}
        with fake_client.stream("POST", "/v1/completions", json=body) as r:
            streamed["status"], streamed["lines"] = r.status_code, [ln for ln in r.iter_lines() if ln]

    thread = threading.Thread(target=stream)
    thread.start()
    engine = fake_client.app.state.pool.models["fake"].engine
    deadline = time.monotonic() + 30
    while added(before, counts(fake_client)).get(key) != 1:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    assert engine.num_running == 1 and thread.is_alive()  # counted while it is still decoding
    fake_backend.release.set()
    thread.join(30)
    assert streamed["status"] == 200 and streamed["lines"][-1] == "data: [DONE]"
    assert added(before, counts(fake_client)).get(key) == 1  # and not again when it ends
