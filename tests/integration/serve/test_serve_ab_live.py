"""Issue #17 over real sockets: an A/B-served name behind uvicorn, 50 concurrent clients, a reload in the middle.
Fake backends (no model weights), so it runs in seconds; the old engine's decode waits for a gate, so the
requests are certainly in flight when the swap happens."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.serve.conftest import LiveServer
from tests.unit.serve.ab_helpers import Loads, ab_settings, wait_for


@pytest.fixture()
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_a_reload_under_50_concurrent_clients_fails_none(tokenizer: Any, tmp_path: Path) -> None:
    loads = Loads(tokenizer, step_s=0.002)
    live = LiveServer(ab_settings(models={"plain": "gated-plain"}, event_log=str(tmp_path)), loader=loads)
    old = live.app.state.pool.models["plain"]
    try:
        def send(i: int) -> tuple[int, str, str]:
            model = "plain" if i < 40 else "chat"
            body = {"model": model, "prompt": [5, i], "max_tokens": 10, "stream": i % 2 == 0}
            with httpx.Client(base_url=live.url, headers={**live.headers, "X-LLMforge-Session": f"s{i}"},
                              timeout=60) as http, http.stream("POST", "/v1/completions", json=body) as r:
                text = "".join(r.iter_text())
            if body["stream"]:
                text = [ln for ln in text.splitlines() if ln.startswith("data: {")][-1].removeprefix("data: ")
            return r.status_code, json.loads(text)["choices"][0]["finish_reason"], r.headers.get(
                "x-llmforge-variant", "")

        with ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(send, i) for i in range(50)]
            wait_for(lambda: old.engine.num_running + old.engine.num_waiting == 40, "40 requests on the old engine")
            r = live.http.post("/admin/reload", json={"models": {"plain": "plain-ref-2"}})
            assert r.status_code == 200 and r.json()["draining"] == 1, r.text
            old.backend.gate.set()
            results = [f.result(timeout=60) for f in futures]
        assert [(s, f) for s, f, _ in results] == [(200, "length")] * 50
        assert {v for _, _, v in results[:40]} == {""} and {v for _, _, v in results[40:]} <= {"v1", "v2"}
        assert all(v for _, _, v in results[40:])  # every A/B answer, streamed or not, names its variant
        wait_for(lambda: not live.app.state.pool.retired, "the old engine to drain")
        after = live.http.post("/v1/completions", json={"model": "plain", "prompt": [5], "max_tokens": 2})
        assert after.status_code == 200
        info = {m["name"]: m["ref"] for m in live.http.get("/model_info").json()["models"]}
        assert info["plain"] == "plain-ref-2"
        statuses = [json.loads(line)["status"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert statuses == [200] * 51
    finally:
        old.backend.gate.set()
        live.stop()
