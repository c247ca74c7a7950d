"""Issue #17, A/B rollout over HTTP on fake backends: the weighted sticky split, the variant header (streams too),
per-variant metrics, feedback, the event log, and a shadow that can neither fail nor hold up the served answer."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from scipy.stats import binomtest

from llmforge.errors import ConfigError
from llmforge.serve.ab import Rollout, Split, ab_flags, hash_unit
from llmforge.serve.settings import ServeSettings
from tests.unit.serve.ab_helpers import (
    BlockedBackend,
    Loads,
    ab_client,
    ab_settings,
    complete,
    metric_lines,
    wait_for,
)

SESSION = "X-LLMforge-Session"


@pytest.fixture()
def loads(tiny_tokenizer: Any) -> Loads:
    return Loads(tiny_tokenizer)


@pytest.fixture()
def client(loads: Loads, tmp_path: Path) -> Any:
    with ab_client(loads, ab_settings(event_log=str(tmp_path / "log"))) as c:
        yield c


def variant(r: Any) -> str:
    assert r.status_code == 200, r.text
    return r.headers["x-llmforge-variant"]


def test_the_split_by_session_header_follows_the_weights_and_sticks(client: Any) -> None:
    first = {k: variant(complete(client, headers={SESSION: f"session-{k}"})) for k in range(200)}
    counts = Counter(first.values())
    assert set(counts) == {"v1", "v2"}
    assert binomtest(counts["v1"], 200, 0.8).pvalue > 0.001, counts
    again = {k: variant(complete(client, headers={SESSION: f"session-{k}"})) for k in range(0, 200, 7)}
    assert again == {k: first[k] for k in again}  # same key, same variant


def test_the_user_field_is_a_sticky_key_and_the_header_comes_first(client: Any) -> None:
    by_user = {u: variant(complete(client, user=f"user-{u}")) for u in range(60)}
    assert set(by_user.values()) == {"v1", "v2"}
    for u in range(0, 60, 5):
        assert {variant(complete(client, user=f"user-{u}")) for _ in range(3)} == {by_user[u]}
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for u in range(0, 60, 6):  # the chat route keys on `user` the same way
        assert variant(client.post("/v1/chat/completions", json=chat | {"user": f"user-{u}"})) == by_user[u]
    # The header wins over `user`: a user whose own variant differs from the header key's follows the header.
    header_key = next(f"h{i}" for i in range(100) if hash_unit("chat", f"h{i}") >= 0.8)  # lands on v2
    user = next(u for u, v in by_user.items() if v == "v1")
    assert variant(complete(client, headers={SESSION: header_key}, user=f"user-{user}")) == "v2"


def test_keyless_requests_are_placed_at_random_by_weight(client: Any) -> None:
    client.app.state.pool.rng = random.Random(17)  # the placement is random; the test's draw is repeatable
    counts = Counter(variant(complete(client)) for _ in range(200))
    assert binomtest(counts["v1"], 200, 0.8).pvalue > 0.001, counts
    assert counts["v2"] > 0


def test_the_variant_header_is_on_plain_and_streamed_answers_and_absent_for_a_plain_model(client: Any) -> None:
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    r = client.post("/v1/chat/completions", json=chat, headers={SESSION: "s1"})
    expected = variant(r)
    with client.stream("POST", "/v1/chat/completions", json=chat | {"stream": True}, headers={SESSION: "s1"}) as s:
        assert s.headers["x-llmforge-variant"] == expected
        lines = [ln for ln in s.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    with client.stream("POST", "/v1/completions", json={"model": "chat", "prompt": [9], "max_tokens": 2,
                                                          "stream": True}, headers={SESSION: "s1"}) as s:
        assert s.headers["x-llmforge-variant"] == expected
    r = client.post("/chat", json={"model": "chat", "message": "hi", "max_tokens": 2}, headers={SESSION: "s1"})
    assert variant(r) == expected
    plain = complete(client, model="plain")
    assert plain.status_code == 200 and "x-llmforge-variant" not in plain.headers
    models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert models == {"plain", "chat"}  # variants are not models a client names


def test_metrics_are_labelled_by_variant(client: Any) -> None:
    keys = {"v1": next(f"k{i}" for i in range(100) if hash_unit("chat", f"k{i}") < 0.8),
            "v2": next(f"k{i}" for i in range(100) if hash_unit("chat", f"k{i}") >= 0.8)}
    for v, key in keys.items():
        for _ in range(2 if v == "v1" else 3):
            assert variant(complete(client, headers={SESSION: key})) == v
    complete(client, model="plain")
    e2e = metric_lines(client, "vllm:e2e_request_latency_seconds_count")
    assert e2e['model_name="chat",variant="v1"'] == 2
    assert e2e['model_name="chat",variant="v2"'] == 3
    assert e2e['model_name="plain",variant=""'] == 1
    success = metric_lines(client, "vllm:request_success_total")
    assert success['finished_reason="length",model_name="chat",variant="v2"'] == 3
    running = metric_lines(client, "vllm:num_requests_running")
    assert set(running) == {'model_name="plain",variant=""', 'model_name="chat",variant="v1"',
                            'model_name="chat",variant="v2"'}


def test_feedback_is_validated_counted_and_logged(client: Any, tmp_path: Path) -> None:
    answer = complete(client, headers={SESSION: "fb"})
    served, rid = variant(answer), answer.json()["id"]
    ok = client.post("/v1/feedback", json={"id": rid, "score": 1.0, "comment": "good"})
    assert ok.status_code == 201, ok.text
    assert ok.json() == {"id": rid, "model": "chat", "variant": served, "recorded": True}
    by_request_id = client.post("/v1/feedback", json={"id": answer.headers["x-request-id"], "score": 0.0})
    assert by_request_id.status_code == 201 and by_request_id.json()["variant"] == served
    counted = metric_lines(client, "llmforge:feedback_score_count")
    assert counted[f'model_name="chat",variant="{served}"'] == 2
    assert metric_lines(client, "llmforge:feedback_score_sum")[f'model_name="chat",variant="{served}"'] == 1.0

    unknown = client.post("/v1/feedback", json={"id": "cmpl-nope", "score": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
    assert unknown.json()["error"]["code"] == "unknown_response"
    for bad, param in (({"id": rid, "score": 1.5}, "score"), ({"id": rid, "score": "NaN"}, "score"),
                       ({"id": rid}, "score"), ({"id": "", "score": 1}, "id"),
                       ({"id": rid, "score": 1, "extra": 1}, "extra")):
        r = client.post("/v1/feedback", json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"] == param, r.text
    huge = client.post("/v1/feedback", content=json.dumps({"id": rid, "score": 1}) + " " * 20_000,
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert client.post("/v1/feedback", json={"id": rid, "score": 1}, headers={"Authorization": "Bearer no"}
                       ).status_code == 401
    assert metric_lines(client, "llmforge:feedback_score_count")[f'model_name="chat",variant="{served}"'] == 2

    events = [json.loads(line) for line in (tmp_path / "log" / "events.jsonl").read_text().splitlines()]
    feedback = [e for e in events if e["event"] == "feedback"]
    assert [(e["variant"], e["score"]) for e in feedback] == [(served, 1.0), (served, 0.0)]
    request_id = answer.headers["x-request-id"]
    request = next(e for e in events if e["event"] == "request" and e["request_id"] == request_id)
    assert request | {"latency_s": 0, "ts": 0} == {
        "ts": 0, "event": "request", "request_id": request_id, "path": "/v1/completions",
        "model": "chat", "variant": served, "status": 200, "latency_s": 0, "prompt_tokens": 1,
        "completion_tokens": 1}


def test_the_event_log_counts_streamed_tokens_and_failed_requests(client: Any, tmp_path: Path) -> None:
    with client.stream("POST", "/v1/completions", json={"model": "chat", "prompt": [9, 10], "max_tokens": 4,
                                                          "stream": True}, headers={SESSION: "st"}) as s:
        list(s.iter_lines())
        rid = s.headers["x-request-id"]
    too_long = complete(client, headers={SESSION: "st"}, max_tokens=10_000)
    assert too_long.status_code == 400
    events = {e["request_id"]: e for e in map(json.loads, (tmp_path / "log" / "events.jsonl").read_text()
                                                  .splitlines())}
    assert (events[rid]["prompt_tokens"], events[rid]["completion_tokens"], events[rid]["status"]) == (2, 4, 200)
    failed = events[too_long.headers["x-request-id"]]
    assert (failed["status"], failed["variant"]) == (400, too_long.headers["x-llmforge-variant"])


def test_a_failing_shadow_is_logged_and_the_served_answers_are_untouched(loads: Loads, tmp_path: Path) -> None:
    settings = ab_settings(event_log=str(tmp_path), ab={"chat": {
        "variants": {"v1": {"model": "ref-a", "weight": 1}, "v2": {"model": "ref-b", "weight": 1}},
        "shadow": "shadow-broken"}})
    with ab_client(loads, settings) as client:
        answers = [complete(client, headers={SESSION: f"s{i}"}, max_tokens=3) for i in range(6)]
        assert all(a.status_code == 200 and a.json()["choices"][0]["finish_reason"] == "length" for a in answers)
        wait_for(lambda: metric_lines(client, "llmforge:shadow_requests_total").get(
            'model_name="chat",outcome="failed"') == 6, lambda: client.get("/metrics").text)
        plain = complete(client, model="plain")  # a plain model has no shadow
        assert plain.status_code == 200
    shadow = [json.loads(line) for line in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert len(shadow) == 6
    assert {a.headers["x-request-id"] for a in answers} == {s["request_id"] for s in shadow}
    assert all(s["outcome"] == "failed" and "the shadow candidate is broken" in s["error"] for s in shadow)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert all(e["status"] == 200 for e in events) and len(events) == 7


def test_shadow_answers_are_logged_not_returned(loads: Loads, tmp_path: Path) -> None:
    settings = ab_settings(event_log=str(tmp_path), ab={"chat": {
        "variants": {"v1": {"model": "ref-a", "weight": 1}, "v2": {"model": "ref-b", "weight": 1}},
        "shadow": "shadow-ok"}})
    with ab_client(loads, settings) as client:
        served = complete(client, headers={SESSION: "x"}, max_tokens=4)
        wait_for(lambda: (tmp_path / "shadow.jsonl").exists(), "no shadow answer logged")
        assert served.headers["x-llmforge-variant"] in ("v1", "v2")
    (record,) = [json.loads(line) for line in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert (record["outcome"], record["ref"], record["completion_tokens"]) == ("completed", "shadow-ok", 4)
    assert len(record["texts"]) == 1 and served.json()["choices"][0]["text"] not in ("",)
    assert "shadow-ok" in loads.refs()


def test_a_stuck_shadow_drops_copies_and_never_holds_up_the_served_answers(loads: Loads, tmp_path: Path) -> None:
    BlockedBackend.unblock.clear()
    settings = ab_settings(event_log=str(tmp_path), shadow_queue=1, ab={"chat": {
        "variants": {"v1": {"model": "ref-a", "weight": 1}, "v2": {"model": "ref-b", "weight": 1}},
        "shadow": "shadow-blocked"}})
    try:
        with ab_client(loads, settings) as client:
            # The shadow's engine is stuck in its first prefill for as long as this block runs: every served
            # answer below comes back regardless, and the copies beyond the shadow's queue are dropped.
            answers = [complete(client, headers={SESSION: f"s{i}"}, max_tokens=2) for i in range(40)]
            assert [a.status_code for a in answers] == [200] * 40
            # 8 shadow workers (max_concurrency) each wait on one copy, 1 waits in the queue: the rest is dropped.
            dropped = metric_lines(client, "llmforge:shadow_requests_total")['model_name="chat",outcome="dropped"']
            assert dropped >= 40 - 8 - 1
            BlockedBackend.unblock.set()
    finally:
        BlockedBackend.unblock.set()


def test_ab_settings_are_checked_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="at least two variants"):
        Rollout.model_validate({"variants": {"v1": {"model": "a", "weight": 1}}})
    with pytest.raises(ValidationError, match="both in `models` and in `ab`"):
        ab_settings(models={"chat": "x"})
    with pytest.raises(ValidationError, match="weight"):
        Rollout.model_validate({"variants": {"v1": {"model": "a", "weight": 0}, "v2": {"model": "b", "weight": 1}}})
    with pytest.raises(ValidationError, match="shadow"):
        Rollout.model_validate({"variants": {"shadow": {"model": "a", "weight": 1}, "v2": {"model": "b", "weight": 1}}})
    with pytest.raises(ConfigError, match="'other' is not A/B-served"):
        ab_flags(["chat=v1:1:a,v2:1:b"], ["other=c"])
    with pytest.raises(ConfigError, match="nothing to serve"):
        ServeSettings.for_models([])
    only_ab = ServeSettings.for_models([], ab=ab_flags(["chat=v1:0.8:a,v2:0.2:registry:demo@production"], []))
    assert only_ab.default_model == "chat" and only_ab.ab["chat"].variants["v2"].model == "registry:demo@production"


def test_raising_a_weight_moves_only_the_share_it_gains() -> None:
    def split(w2: float) -> Split:
        return Split.of("chat", Rollout.model_validate({"variants": {"v1": {"model": "a", "weight": 1 - w2},
                                                                     "v2": {"model": "b", "weight": w2}}}))
    rng = random.Random(0)
    before = {k: split(0.2).pick(f"k{k}", rng) for k in range(500)}
    after = {k: split(0.5).pick(f"k{k}", rng) for k in range(500)}
    assert all(after[k] == "v2" for k, v in before.items() if v == "v2")  # nobody leaves the ramped variant
    assert 0.2 < sum(v == "v2" for v in after.values()) / 500 - sum(v == "v2" for v in before.values()) / 500 < 0.4
