"""Issue #13, items 1, 3, 7, 9: sampling is numerically safe, one row's failure stays in its row, the vLLM
sampling extensions do what they say, seeds of any size work, and the running gauge waits for the consumer."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmforge.serve.engine import AsyncResults, Engine, EngineConfig, GenerationRequest, Output
from llmforge.serve.sampling import RowSampler, SamplingParams, apply_repetition_penalty, sample

EXTREME_FLOATS = st.one_of(st.sampled_from([0.0, 5e-324, 1e-300, 1e-45, 1e-6, 1e-5, 0.5, 1.0, 2.0]),
                           st.floats(min_value=0.0, max_value=2.0, allow_subnormal=True))


def logits(seed: int = 0, v: int = 64) -> torch.Tensor:
    return torch.randn(v, generator=torch.Generator().manual_seed(seed)) * 10  # (V,)


@pytest.mark.parametrize("temperature, top_p", [(1e-300, 1.0), (5e-324, 1.0), (1.0, 1e-300), (1e-300, 1e-300),
                                                (1e-6, 0.5), (2.0, 5e-324)])
def test_tiny_temperature_is_greedy_and_tiny_top_p_keeps_the_top_token(temperature: float, top_p: float) -> None:
    scores = logits()
    g = torch.Generator().manual_seed(0)
    assert {sample(scores, temperature, top_p, g) for _ in range(20)} == {int(scores.argmax())}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(temperature=EXTREME_FLOATS, top_p=EXTREME_FLOATS.filter(lambda x: x > 0),
       top_k=st.integers(-1, 100), min_p=st.floats(0.0, 1.0), scale=st.sampled_from([1e-3, 1.0, 1e4, 3e38]))
def test_sampling_never_fails_for_finite_logits(temperature: float, top_p: float, top_k: int, min_p: float,
                                                scale: float) -> None:
    scores = torch.tanh(logits()) * scale  # finite, up to float32's largest
    token = sample(scores, temperature, top_p, torch.Generator().manual_seed(1), top_k=max(top_k, 0), min_p=min_p)
    assert 0 <= token < len(scores)
    assert math.isfinite(float(scores[token]))


def test_top_k_min_p_repetition_penalty_and_logit_bias() -> None:
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    assert {sample(scores, 1.0, 1.0, g, top_k=2) for _ in range(300)} == {0, 1}
    assert {sample(scores, 1.0, 1.0, g, min_p=0.5) for _ in range(300)} == {0, 1}  # 0.3 >= 0.5 x 0.5
    assert {sample(scores, 1.0, 1.0, g, top_k=0) for _ in range(600)} == {0, 1, 2, 3}
    penalized = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), {0, 1}, 2.0)
    assert penalized.tolist() == [1.0, -4.0, 1.0]  # positive divided, negative multiplied, unseen untouched
    biased = RowSampler(SamplingParams(temperature=0.0, logit_bias=((3, 100.0),)))
    assert biased.pick(scores, 0)[0] == 3  # the bias moves even a greedy row
    banned = RowSampler(SamplingParams(temperature=0.0, logit_bias=((0, -100.0),)))
    assert banned.pick(scores, 0)[0] == 1
    # Repetition penalty counts the prompt too: token 0 (in the prompt) loses its lead to token 1.
    rep = RowSampler(SamplingParams(temperature=0.0, repetition_penalty=5.0), prompt_ids=(0,))
    assert rep.pick(torch.tensor([2.0, 1.0, -1.0]), 0)[0] == 1


@pytest.mark.parametrize("penalty", [1e-300, 5e-324, 10.0])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_extreme_repetition_penalties_still_leave_a_token(penalty: float, temperature: float) -> None:
    # found by schemathesis: repetition_penalty=1e-300 divided positive logits into inf, and the row failed
    row = RowSampler(SamplingParams(temperature=temperature, repetition_penalty=penalty, frequency_penalty=2.0),
                     prompt_ids=(0, 1, 2))
    for _ in range(3):
        token, _ = row.pick(torch.tensor([3.0, 2.0, -1.0, 0.5]), 0)
        assert 0 <= token < 4


def test_any_seed_is_reduced_into_range() -> None:
    scores = logits()
    big = RowSampler(SamplingParams(seed=2**64 + 5))
    small = RowSampler(SamplingParams(seed=5))
    negative = RowSampler(SamplingParams(seed=-(2**63)))
    assert [big.pick(scores, 0)[0] for _ in range(10)] == [small.pick(scores, 0)[0] for _ in range(10)]
    assert 0 <= negative.pick(scores, 0)[0] < len(scores)


# --- the engine: one row's failure is that row's alone -------------------------------------------------------


def run(engine: Engine, requests: list[GenerationRequest], backend: Any) -> dict[int, list[Output]]:
    """Submit `requests` (the first is a held victim), release the victim once every other one finished."""
    outs: dict[int, list[Output]] = {}
    finished = threading.Semaphore(0)
    others_done = threading.Semaphore(0)

    def on_output(out: Output) -> None:
        outs.setdefault(out.index, []).append(out)
        if out.finish_reason is not None:
            finished.release()
            if out.index > 0:
                others_done.release()

    engine.submit(requests, on_output)
    for _ in requests[1:]:
        assert others_done.acquire(timeout=30)
    backend.release.set()
    for _ in requests:
        assert finished.acquire(timeout=30)
    return outs


def req(ids: list[int], **kw: Any) -> GenerationRequest:
    return GenerationRequest(ids, SamplingParams(**{"max_tokens": 8, **kw}))


def test_a_failing_row_fails_alone_and_extreme_values_do_not_fail(fake_backend: Any) -> None:
    b = fake_backend
    b.max_model_len = 1 << 20  # the victim runs until released, however long the others take
    engine = Engine(b, EngineConfig(max_batch=8)).start()
    try:
        victim = req([5, b.hold_token], max_tokens=100_000, temperature=0.8, seed=1)
        outs = run(engine, [victim,
                            req([7, b.nan_token], temperature=1.0),  # NaN logits: sampling raises
                            req([9], temperature=1e-300), req([9], top_p=1e-300), req([9], seed=2**70),
                            req([9], temperature=2.0, top_k=1, min_p=1.0, repetition_penalty=10.0)], b)
        last = {i: o[-1] for i, o in outs.items()}
        assert last[0].finish_reason == "stop" and last[0].error is None  # the victim went on until released
        assert last[1].finish_reason == "error" and "NaN" in (last[1].error or "")
        assert all(last[i].finish_reason == "length" for i in range(2, 6))
        assert engine.generate([req([9], temperature=0.0)], timeout=30)[0].finish_reason == "length"
    finally:
        engine.close()


def test_a_prompt_that_breaks_the_prefill_fails_alone(fake_backend: Any) -> None:
    b = fake_backend
    b.max_model_len = 1 << 20
    engine = Engine(b, EngineConfig(max_batch=8)).start()
    try:
        victim = req([5, b.hold_token], max_tokens=100_000, temperature=0.0)
        # Admitted together with the victim and a good newcomer: the prefill of all three fails at first.
        outs = run(engine, [victim, req([7, b.boom_token]), req([9], temperature=0.0)], b)
        last = {i: o[-1] for i, o in outs.items()}
        assert last[0].finish_reason == "stop" and last[2].finish_reason == "length"
        assert last[1].finish_reason == "error" and "boom" in (last[1].error or "")
        assert [len(o) for o in outs.values()] == [len(outs[0]), 1, 8]  # nothing emitted twice
        # A victim already decoding when the bad prompt arrives goes on too.
        b.release.clear()
        running = threading.Event()
        finals: list[Output] = []
        engine.submit([victim], lambda out: (running.set(), out.finish_reason and finals.append(out)))
        assert running.wait(30)
        bad = engine.generate([req([7, b.boom_token])], timeout=30)[0]
        assert bad.finish_reason == "error" and engine.num_running == 1
        b.release.set()
        deadline = time.monotonic() + 30
        while not finals and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [o.finish_reason for o in finals] == ["stop"]
    finally:
        engine.close()


def test_top_logprobs_beyond_a_tiny_vocabulary_are_clamped() -> None:
    lp = RowSampler(SamplingParams(temperature=0.0, logprobs=20)).pick(torch.tensor([1.0, 2.0, 0.5]), 1)[1]
    assert lp is not None and [i for i, _ in lp.top] == [1, 0, 2]


def test_running_gauge_drops_before_the_last_output_reaches_its_consumer(fake_backend: Any) -> None:
    engine = Engine(fake_backend, EngineConfig()).start()

    async def main() -> list[int]:
        seen: list[int] = []
        results = AsyncResults(engine, [req([9], max_tokens=3)])
        async for out in results:
            seen.append(engine.num_running)  # what a /metrics scrape would say as this chunk is sent
        results.cancel()
        return seen

    try:
        seen = asyncio.run(main())
        assert seen[-1] == 0, seen  # the final chunk: no longer counted as running, however fast it is read
    finally:
        engine.close()