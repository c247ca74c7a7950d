"""The engine without HTTP, on the fake backend (conftest.py): batching invariants, stops, cancellation, limits.

The engine only needs the `Backend` protocol; the fake's logits depend on each row's whole history, so rows that
the engine joins, selects or feeds out of order decode differently here as they would on a real model. The
transformers backend's own KV-cache batching is tested on the tiny model in test_serve_backends.py, and the
engine over real models in tests/integration/serve and tests/real."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from llmforge.serve.engine import (
    ContextLengthError,
    Engine,
    EngineConfig,
    GenerationRequest,
    Output,
    QueueFullError,
)
from llmforge.serve.sampling import SamplingParams
from tests.unit.serve.conftest import FakeBackend

PROMPTS = ["def add(a, b):", "class Stack:\n    def push(self, x):", "import os", "x"]


@pytest.fixture()
def backend(tiny_tokenizer: Any) -> FakeBackend:
    return FakeBackend(tiny_tokenizer, max_model_len=256, context=True)


@pytest.fixture()
def engine(backend: Any) -> Any:
    e = Engine(backend, EngineConfig(max_batch=8, max_queue=8)).start()
    yield e
    e.close()


def greedy(backend: Any, text: str, n: int = 24, **kw: Any) -> GenerationRequest:
    ids = backend.tokenizer(text)["input_ids"]
    return GenerationRequest(ids, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw))


def test_greedy_alone_equals_batched_and_joined_mid_flight(engine: Any, backend: Any) -> None:
    alone = [engine.generate([greedy(backend, p)])[0].token_ids for p in PROMPTS]
    assert len({tuple(ids) for ids in alone}) == len(PROMPTS)  # each row's tokens depend on its own prompt
    together = [c.token_ids for c in engine.generate([greedy(backend, p) for p in PROMPTS])]
    assert together == alone
    # Rows joining a running batch between decode steps: start one, add the others after its first tokens.
    first_tokens = threading.Event()
    results: dict[int, list[int]] = {}
    done = threading.Semaphore(0)

    def collect(key: int) -> Any:
        def on_output(out: Output) -> None:
            results.setdefault(key, []).extend(out.token_ids)
            if len(results[key]) >= 3:
                first_tokens.set()
            if out.finish_reason:
                done.release()
        return on_output

    engine.submit([greedy(backend, PROMPTS[0])], collect(0))
    assert first_tokens.wait(30)
    for k, p in enumerate(PROMPTS[1:], start=1):
        engine.submit([greedy(backend, p)], collect(k))
    for _ in PROMPTS:
        assert done.acquire(timeout=30)
    assert [results[k] for k in range(len(PROMPTS))] == alone


def test_seeded_sampling_is_the_same_alone_or_batched(engine: Any, backend: Any) -> None:
    def req(p: str) -> GenerationRequest:
        ids = backend.tokenizer(p)["input_ids"]
        return GenerationRequest(ids, SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=3,
                                                     ignore_eos=True))
    alone = [engine.generate([req(p)])[0].token_ids for p in PROMPTS[:2]]
    assert alone[0] != alone[1]
    assert [c.token_ids for c in engine.generate([req(p) for p in PROMPTS[:2]])] == alone


def test_stop_string_eos_and_length(engine: Any, backend: Any) -> None:
    full = engine.generate([greedy(backend, PROMPTS[0], 24)])[0]
    assert full.finish_reason == "length" and full.completion_tokens == 24
    stop = full.text[len(full.text) // 2:][:2]
    assert stop
    cut = engine.generate([greedy(backend, PROMPTS[0], 24, stop=(stop,))])[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.index(stop)]
    eos = next(iter(backend.eos_token_ids))
    # Whatever the model says, a row stops at eos unless it ignores eos: force eos by banning every other token.
    class EosOnly:
        def __getattr__(self, name: str) -> Any:
            return getattr(backend, name)

        def prefill(self, prompts: list[list[int]]) -> Any:
            logits, state = backend.prefill(prompts)
            logits[:, eos] = 1e9
            return logits, state
    e = Engine(EosOnly(), EngineConfig()).start()  # type: ignore[arg-type]
    try:
        out = e.generate([GenerationRequest(greedy(backend, "x").prompt_ids, SamplingParams(max_tokens=5,
                                                                                            temperature=0.0))])[0]
        assert out.finish_reason == "stop" and out.completion_tokens == 1 and out.text == ""
    finally:
        e.close()


def test_cancelled_rows_leave_at_once_and_free_their_slots(tiny_tokenizer: Any) -> None:
    backend = FakeBackend(tiny_tokenizer, step_s=0.01, max_model_len=256, context=True)  # 200 steps: >= 2 s
    e = Engine(backend, EngineConfig(max_batch=2, max_queue=4)).start()
    try:
        started = threading.Event()
        finals: list[Output] = []

        def on_output(out: Output) -> None:
            started.set()
            if out.finish_reason:
                finals.append(out)

        handles = e.submit([greedy(backend, p, 200) for p in PROMPTS], on_output)
        assert started.wait(30)
        for h in handles:
            h.cancel()
        deadline = time.monotonic() + 30
        while len(finals) < len(PROMPTS) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(o.finish_reason for o in finals) == ["abort"] * len(PROMPTS)
        assert sum(o.completion_tokens for o in finals) < 200  # nobody ran to the end
        assert e.num_running == 0 and e.num_waiting == 0
        assert e.generate([greedy(backend, "x", 3)], timeout=30)[0].completion_tokens == 3
    finally:
        e.close()


def test_queue_bound_context_bound_and_timeout(backend: Any) -> None:
    e = Engine(backend, EngineConfig(max_batch=1, max_queue=1))  # not started: nothing leaves the queue
    noop = lambda out: None  # noqa: E731
    e.submit([greedy(backend, "x")], noop)
    e.submit([greedy(backend, "x")], noop)
    with pytest.raises(QueueFullError):
        e.submit([greedy(backend, "x")], noop)
    with pytest.raises(ContextLengthError, match="maximum context length is 256"):
        e.submit([greedy(backend, "x", 300)], noop)
    e.start()
    e.close()
    timed = Engine(backend, EngineConfig()).start()
    try:
        req = GenerationRequest(greedy(backend, "x", 200).prompt_ids, greedy(backend, "x", 200).params,
                                timeout_s=1e-6)
        out = timed.generate([req], timeout=30)[0]
        assert out.finish_reason == "timeout" and out.error
    finally:
        timed.close()


def test_a_failing_step_fails_its_rows_not_the_engine(backend: Any) -> None:
    class Flaky:
        calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(backend, name)

        def prefill(self, prompts: list[list[int]]) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("boom")
            return backend.prefill(prompts)
    e = Engine(Flaky(), EngineConfig()).start()  # type: ignore[arg-type]
    try:
        bad = e.generate([greedy(backend, "x", 4)], timeout=30)[0]
        assert bad.finish_reason == "error" and "boom" in (bad.error or "")
        assert e.generate([greedy(backend, "x", 4)], timeout=30)[0].completion_tokens == 4
    finally:
        e.close()
