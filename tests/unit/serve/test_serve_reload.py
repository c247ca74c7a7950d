"""Issue #17, reload without dropping requests, on fake backends: the new models load and warm while the old
serve, the swap happens between two requests, each old engine finishes its in-flight requests, then closes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from llmforge.serve.app import create_app
from llmforge.serve.rollout import ReloadRequest, plan_reload
from tests.unit.serve.ab_helpers import Loads, ab_client, ab_settings, complete, wait_for

SESSION = "X-LLMforge-Session"


@pytest.fixture()
def loads(tiny_tokenizer: Any) -> Loads:
    return Loads(tiny_tokenizer, step_s=0.002)


def served_by(client: Any, name: str) -> list[str]:
    return [m["ref"] for m in client.get("/model_info").json()["models"] if m["name"] == name]


def test_reload_while_50_requests_are_in_flight_fails_none_and_the_new_model_serves_after(loads: Loads) -> None:
    with ab_client(loads, ab_settings(models={"plain": "gated-plain"})) as client:
        old = client.app.state.pool.models["plain"]
        bodies = [{"model": "plain", "prompt": [5, i], "max_tokens": 20, "stream": i % 2 == 1} for i in range(50)]
        bodies += [{"model": "chat", "prompt": [7], "max_tokens": 20} for _ in range(10)]

        def send(body: dict[str, Any]) -> tuple[int, str]:
            if not body.get("stream"):
                r = client.post("/v1/completions", json=body)
                return r.status_code, r.json()["choices"][0]["finish_reason"] if r.status_code == 200 else r.text
            with client.stream("POST", "/v1/completions", json=body) as r:
                lines = [ln for ln in r.iter_lines() if ln]
            assert lines[-1] == "data: [DONE]", lines
            last = json.loads(lines[-2].removeprefix("data: "))  # the finishing chunk, or an error event
            return r.status_code, last["choices"][0]["finish_reason"] if "choices" in last else str(last)

        with ThreadPoolExecutor(60) as pool:
            futures = [pool.submit(send, b) for b in bodies]
            # All 50 are on the old engine, none can finish (its decode waits for the gate): in flight.
            wait_for(lambda: old.engine.num_running + old.engine.num_waiting == 50, "50 requests in flight")
            during = pool.submit(lambda: [send(b) for b in bodies[1:40:4]])  # more requests while reloading
            r = client.post("/admin/reload", json={"models": {"plain": "plain-ref-2"}})
            assert r.status_code == 200, r.text
            assert r.json()["reloaded"] == ["plain"] and r.json()["draining"] == 1
            # The swap is done; the old engine still holds its requests: it drains them, it does not drop them.
            assert old.engine.num_running + old.engine.num_waiting >= 50 and old in client.app.state.pool.retired
            assert served_by(client, "plain") == ["plain-ref-2"]
            new_backend = client.app.state.pool.models["plain"].backend
            assert new_backend is not old.backend
            old.backend.gate.set()
            results = [f.result(timeout=60) for f in futures] + during.result(timeout=60)
        assert results == [(200, "length")] * 70, Counter(results)
        wait_for(lambda: not client.app.state.pool.retired, "the old engine to drain and close")
        assert old.engine._thread is not None and not old.engine._thread.is_alive()  # closed once drained
        calls = []
        new_backend.prefill = lambda prompts, f=new_backend.prefill: calls.append(1) or f(prompts)  # type: ignore
        assert complete(client, model="plain").status_code == 200 and calls == [1]  # the new model serves
        assert 'llmforge:reloads_total{outcome="ok"} 1.0' in client.get("/metrics").text


def test_a_reload_resolves_every_reference_again(loads: Loads) -> None:
    with ab_client(loads, ab_settings()) as client:
        first = sorted(loads.refs())
        r = client.post("/admin/reload")
        assert r.status_code == 200, r.text
        assert sorted(r.json()["reloaded"]) == ["chat", "plain"]
        assert sorted(loads.refs()) == sorted(first * 2)  # every reference loaded (resolved) again
        wait_for(lambda: not client.app.state.pool.retired, "the old engines to close")
        assert complete(client).status_code == 200


def test_a_reload_can_change_the_variants_and_weights(loads: Loads) -> None:
    with ab_client(loads, ab_settings()) as client:
        new = {"variants": {"v1": {"model": "ref-a", "weight": 1}, "v3": {"model": "ref-c", "weight": 1}}}
        r = client.post("/admin/reload", json={"ab": {"chat": new}})
        assert r.status_code == 200, r.text
        assert client.get("/openapi.json").status_code == 200  # built, then rebuilt after the reload below
        r = client.post("/admin/reload", json={"models": {"extra": "ref-x"}})
        assert r.status_code == 200, r.text
        pinned = client.get("/openapi.json").json()["components"]["schemas"]["CompletionRequest"]["properties"]
        assert pinned["model"]["enum"] == ["plain", "extra", "chat"]  # a reload's new name is documented
        seen = Counter(complete(client, headers={SESSION: f"s{i}"}).headers["x-llmforge-variant"] for i in range(60))
        assert set(seen) == {"v1", "v3"}, seen
        assert served_by(client, "plain") == ["plain-ref"]  # not named: not reloaded
        assert loads.refs().count("plain-ref") == 1


def test_a_failed_reload_keeps_the_served_models(loads: Loads) -> None:
    with ab_client(loads, ab_settings()) as client:
        r = client.post("/admin/reload", json={"ab": {"chat": {"variants": {
            "v1": {"model": "ref-a", "weight": 1}, "v2": {"model": "unloadable-b", "weight": 1}}}}})
        assert r.status_code == 500 and r.json()["error"]["code"] == "reload_failed"
        assert "chat#v2" in r.json()["error"]["message"] and "unloadable-b" in r.json()["error"]["message"]
        assert sorted(served_by(client, "chat")) == ["ref-a", "ref-b"]
        assert complete(client, headers={SESSION: "k"}).status_code == 200
        assert 'llmforge:reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text
        bad = client.post("/admin/reload", json={"ab": {"chat": {"variants": {"v1": {"model": "a", "weight": 1}}}}})
        assert bad.status_code == 400 and "at least two variants" in bad.json()["error"]["message"]
        assert client.post("/admin/reload", json={"model": "x"}).status_code == 400


def test_admin_reload_needs_a_key_and_a_server_with_keys(loads: Loads) -> None:
    with ab_client(loads, ab_settings()) as client:
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with ab_client(loads, ab_settings(api_keys=[])) as client:
        r = client.post("/admin/reload")
        assert r.status_code == 403 and "SIGHUP" in r.json()["error"]["message"]


def test_plan_reload_moves_a_name_between_plain_and_ab() -> None:
    settings = ab_settings()
    moved, names = plan_reload(settings, ReloadRequest(models={"chat": "one-ref"}))
    assert moved.models == {"plain": "plain-ref", "chat": "one-ref"} and moved.ab == {} and names == ["chat"]
    back, names = plan_reload(moved, ReloadRequest(ab={"plain": settings.ab["chat"]}))
    assert set(back.ab) == {"plain"} and back.models == {"chat": "one-ref"} and names == ["plain"]


def test_sighup_reloads_every_model(loads: Loads) -> None:
    """The runner's handler, on this (main) thread's loop, as `llmforge serve` installs it."""
    from llmforge.serve.runner import _reload_on_sighup

    app = create_app(ab_settings(), loader=loads)
    threads = torch.get_num_threads()

    async def main() -> None:
        async with app.router.lifespan_context(app):
            while not app.state.pool.ready:
                await asyncio.sleep(0.01)
            before = len(loads.loaded)
            _reload_on_sighup(app)
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(3000):
                    if len(loads.loaded) == 2 * before and not app.state.reloader.lock.locked():
                        break
                    await asyncio.sleep(0.01)
            finally:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            assert len(loads.loaded) == 2 * before
            assert 'llmforge:reloads_total{outcome="ok"} 1.0' in app.state.metrics.render().decode()

    assert threading.current_thread() is threading.main_thread()
    asyncio.run(main())
    torch.set_num_threads(threads)
