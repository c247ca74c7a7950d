"""Issue #13 over HTTP, on the fake backend: every bad value is a 400 naming its field or a documented clamp, and
a stream already under way survives all of them; seeds, surrogates, strict types, the simple /batch_chat list,
the vLLM sampling extensions, HEAD probes and a schema that says what the server does."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Documented ranges (schemas.SamplingFields): inside, a request is served (tiny values clamp: temperature
# < 1e-5 is greedy, top_p keeps the top token); outside, or of the wrong JSON type, it is a 400 naming the field.
FLOAT_RANGES = {"temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, True), "min_p": (0.0, 1.0, False),
                "repetition_penalty": (0.0, 10.0, True), "presence_penalty": (-2.0, 2.0, False),
                "frequency_penalty": (-2.0, 2.0, False)}
INT_RANGES = {"top_k": (-1, 1_000_000), "seed": (-(2**63), 2**63 - 1)}
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-3, 12),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e-5, 1.0, 2.0, 10.0, 1e300]),
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.booleans(), st.sampled_from(["1", None]),
)
FIELDS = st.dictionaries(st.sampled_from([*FLOAT_RANGES, *INT_RANGES]), NUMBERS, min_size=1, max_size=3)


def valid(field: str, value: Any) -> bool:
    if value is None:
        return field == "seed"  # the only nullable one
    if isinstance(value, bool) or isinstance(value, str):
        return False
    if field in INT_RANGES:  # 20.0 is the integer 20 in JSON; 20.5 is not an integer
        lo, hi = INT_RANGES[field]
        integral = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
        return integral and lo <= value <= hi
    lo, hi, open_low = FLOAT_RANGES[field]
    return math.isfinite(value) and (lo < value if open_low else lo <= value) and value <= hi


def post(client: Any, path: str, body: Any) -> Any:
    """As Python's json writes it: NaN and Infinity as bare words, a lone surrogate as `\\ud800`."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def completion(client: Any, **fields: Any) -> Any:
    return post(client, "/v1/completions", {"model": "fake", "prompt": [9], "max_tokens": 3, **fields})


def test_fuzzed_sampling_values_get_400_or_a_clamp_and_the_victim_stream_survives(fake_client: Any,
                                                                                   fake_backend: Any) -> None:
    fake_backend.max_model_len = 1 << 20  # the victim runs until released
    victim: dict[str, Any] = {}

    def stream() -> None:
        body = {"model": "fake", "prompt": [5, fake_backend.hold_token], "max_tokens": 100_000, "stream": True,
                "temperature": 0.7, "seed": 3}
        with fake_client.stream("POST", "/v1/completions", json=body) as r:
            victim["status"], victim["lines"] = r.status_code, [ln for ln in r.iter_lines() if ln]

    thread = threading.Thread(target=stream)
    thread.start()
    engine = fake_client.app.state.pool.models["fake"].engine
    deadline = time.monotonic() + 30
    while engine.num_running < 1:  # the victim is decoding (it cannot end before it is released)
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.005)

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(fields=FIELDS)
    def fuzz(fields: dict[str, Any]) -> None:
        r = completion(fake_client, **fields)
        bad = [k for k, v in fields.items() if not valid(k, v)]
        if bad:
            assert r.status_code == 400, (fields, r.text)
            assert r.json()["error"]["param"] in bad, r.text
        else:
            assert r.status_code == 200, (fields, r.text)
            assert r.json()["choices"][0]["finish_reason"] == "length"

    fuzz()
    assert engine.num_running == 1 and thread.is_alive()
    fake_backend.release.set()
    thread.join(30)
    assert victim["status"] == 200 and victim["lines"][-1] == "data: [DONE]"
    events = [json.loads(ln.removeprefix("data: ")) for ln in victim["lines"][:-1]]
    assert not any("error" in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_seed_range_surrogates_strict_types_and_unknown_fields(fake_client: Any) -> None:
    assert completion(fake_client, seed=2**63 - 1, n=2).status_code == 200  # seed + choice wraps, no overflow
    r = completion(fake_client, seed=2**64)
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    for field, value in (("temperature", False), ("stream", "yes"), ("max_tokens", 3.5), ("n", "2")):
        r = completion(fake_client, **{field: value})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    for field in ("guided_grammar", "best_of_n", "functions", "prediction"):
        r = completion(fake_client, **{field: {"x": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == field
        assert f"'{field}' is not supported" in r.json()["error"]["message"]
    surrogate = "a\ud800b"
    cases = [("/v1/completions", {"model": "fake", "prompt": surrogate}, "prompt"),
             ("/v1/completions", {"model": "fake", "prompt": ["ok", surrogate]}, "prompt.1"),
             ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": surrogate}]},
              "messages.0.content"),
             ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "x"}],
                                       "stop": [surrogate]}, "stop.0"),
             ("/chat", {"message": surrogate}, "message"),
             ("/batch_chat", {"messages": ["ok", surrogate]}, "messages.1")]
    for path, body, param in cases:
        r = post(fake_client, path, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, r.text)
    r = post(fake_client, "/batch_chat", [{"message": surrogate}, {"message": "hi", "max_length": 2}])
    assert r.status_code == 200
    assert r.json()[0]["error"]["param"] == "message" and r.json()[1]["usage"]["completion_tokens"] == 2


def test_vllm_sampling_extensions_change_the_result(fake_client: Any, fake_backend: Any) -> None:
    def tokens(**fields: Any) -> list[int]:
        r = completion(fake_client, **{"temperature": 0, "logprobs": 0, "max_tokens": 4, **fields})
        assert r.status_code == 200, r.text
        return [fake_backend.tokenizer.convert_tokens_to_ids(t) for t in r.json()["choices"][0]["logprobs"]["tokens"]]

    plain = tokens()
    banned = tokens(logit_bias={str(plain[0]): -100})
    assert banned[0] != plain[0]
    assert tokens(logit_bias={"77": 100}) == [77] * 4
    # Same last prompt token (the fake's logits depend on it alone), but plain[0] is now in the prompt:
    assert tokens(prompt=[plain[0], 9])[0] == plain[0]
    assert tokens(prompt=[plain[0], 9], repetition_penalty=10.0)[0] != plain[0]
    assert tokens(top_k=1, temperature=1.5, seed=1) == plain  # top_k=1 is greedy whatever the temperature
    r = completion(fake_client, logit_bias={str(fake_backend.vocab): 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"
    r = completion(fake_client, ignore_eos=True, max_tokens=5)
    assert r.json()["usage"]["completion_tokens"] == 5


def test_batch_chat_takes_a_bare_list_with_per_item_settings(fake_client: Any) -> None:
    items = [{"message": "hello", "max_length": 3}, {"message": ""}, {"message": "hi", "max_tokens": 5,
                                                                       "temperature": 0},
             {"message": "x", "model": "nope"}, {"message": "y", "top_k": 3}]
    r = fake_client.post("/batch_chat", json=items)
    assert r.status_code == 200, r.text
    slots = r.json()
    assert [s.get("usage", {}).get("completion_tokens") for s in slots] == [3, None, 5, None, None]
    assert slots[1]["error"]["param"] == "message" and slots[1]["error"]["type"] == "invalid_request_error"
    assert slots[3]["error"]["code"] == "model_not_found"
    assert slots[4]["error"]["param"] == "top_k"
    obj = fake_client.post("/batch_chat", json={"messages": ["a", "b"], "max_length": 2})
    assert obj.status_code == 200 and [a["usage"]["completion_tokens"] for a in obj.json()["responses"]] == [2, 2]
    too_many = fake_client.post("/batch_chat", json=[{"message": "a"}] * 9)
    assert too_many.status_code == 400
    assert fake_client.post("/batch_chat", json="text").status_code == 400


def test_head_probes_and_a_schema_that_says_what_the_server_does(fake_client: Any) -> None:
    assert fake_client.head("/health").status_code == 200 and fake_client.head("/").status_code == 200
    schema = fake_client.get("/openapi.json").json()
    ops = [op for path in schema["paths"].values() for op in path.values()]
    assert not any("422" in op["responses"] for op in ops)
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Retry-After" in chat["503"]["headers"] and "text/event-stream" in chat["200"]["content"]
    assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    request = schema["components"]["schemas"]["CompletionRequest"]
    assert request["properties"]["model"]["enum"] == ["fake"] and request["additionalProperties"] is False
    assert all(v.get("minLength", v.get("minItems")) == 1 for v in request["properties"]["prompt"]["anyOf"])
    batch = schema["paths"]["/batch_chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["oneOf"][0]["type"] == "array"
    assert fake_client.post("/v1/completions", json={"model": "fake", "prompt": ""}).status_code == 400
