"""Structured output (`llmforge.serve.guided`) in the engine, on the fake backend: every output under a schema
validates against it, for random schemas, several constrained rows batched together with free ones; regex and
choice outputs match; bad grammars are refused before anything runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmforge.serve.engine import Engine, EngineConfig, GenerationRequest
from llmforge.serve.guided import GrammarError, compile_grammar
from llmforge.serve.sampling import SamplingParams
from tests.unit.serve.conftest import FakeBackend

MAX_TOKENS = 400  # every schema below is bounded, so it completes well within this


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Any) -> FakeBackend:
    from transformers import AutoTokenizer

    return FakeBackend(AutoTokenizer.from_pretrained(str(tiny_model_dir)), max_model_len=1 << 12, context=True)


@pytest.fixture(scope="module")
def engine(backend: FakeBackend) -> Iterator[Engine]:
    e = Engine(backend, EngineConfig(max_batch=8, max_queue=8)).start()
    yield e
    e.close()


def grammar(backend: FakeBackend, **asked: Any) -> Any:
    return compile_grammar(backend.tokenizer, backend.eos_token_ids, **asked)


def request(backend: FakeBackend, prompt: str, g: Any = None, temperature: float = 0.0, seed: int = 0,
            max_tokens: int = MAX_TOKENS) -> GenerationRequest:
    ids = backend.tokenizer(prompt)["input_ids"]
    return GenerationRequest(ids, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                                                 grammar=g))


# Bounded schemas: every one has a finite longest instance, so a model that never chooses to stop still ends.
LEAVES = st.one_of(
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-50, 50), st.integers(0, 500)),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 8)),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda xs: {"enum": xs}, st.lists(st.sampled_from(["red", "green", 3, True, None, "a b"]),
                                                  min_size=1, max_size=4, unique=True)),
    st.builds(lambda n: {"type": "array", "items": {"type": "boolean"}, "maxItems": n}, st.integers(0, 3)),
)


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}


NAMES = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
SCHEMAS = st.recursive(LEAVES, lambda inner: st.dictionaries(NAMES, inner, min_size=1, max_size=3).map(_object),
                       max_leaves=6).filter(lambda s: s.get("type") == "object")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schemas=st.lists(SCHEMAS, min_size=1, max_size=3), temperature=st.sampled_from([0.0, 0.8, 1.5]),
       seed=st.integers(0, 1000))
def test_every_output_validates_against_its_schema_under_batching(backend: FakeBackend, engine: Engine,
                                                                  schemas: list[dict[str, Any]],
                                                                  temperature: float, seed: int) -> None:
    constrained = [request(backend, f"Answer {i}:", grammar(backend, guided_json=s), temperature, seed + i)
                   for i, s in enumerate(schemas)]
    free = request(backend, "Free text:", None, temperature, seed, max_tokens=12)
    done = engine.generate([*constrained, free], timeout=120)
    for schema, c in zip(schemas, done):
        assert c.finish_reason == "stop", (schema, c.text, c.finish_reason, c.error)
        jsonschema.validate(json.loads(c.text), schema)
    assert done[-1].finish_reason in ("length", "stop")  # the unconstrained row beside them ran as usual


@pytest.mark.parametrize("asked, check", [
    ({"response_format": {"type": "json_object"}}, lambda t: isinstance(json.loads(t), dict)),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": _object(
        {"age": {"type": "integer", "minimum": 0, "maximum": 120}})}}},
     lambda t: 0 <= json.loads(t)["age"] <= 120),
    ({"guided_regex": r"[A-Z]{2}-\d{3}"}, lambda t: re.fullmatch(r"[A-Z]{2}-\d{3}", t)),
    ({"guided_choice": ["yes", "no", "it depends (a-b)"]}, lambda t: t in ("yes", "no", "it depends (a-b)")),
])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_kind_of_structure(backend: FakeBackend, engine: Engine, asked: dict[str, Any], check: Any,
                                temperature: float) -> None:
    done = engine.generate([request(backend, "Q:", grammar(backend, **asked), temperature, seed=s)
                            for s in range(4)], timeout=120)
    for c in done:
        if c.finish_reason == "length":  # only an unbounded grammar (any object) may run out of tokens at random
            assert "json_object" in str(asked) and c.completion_tokens == MAX_TOKENS
        else:
            assert c.finish_reason == "stop" and check(c.text), c.text


def test_json_object_cut_by_max_tokens_ends_with_length(backend: FakeBackend, engine: Engine) -> None:
    g = grammar(backend, guided_json={"type": "object", "properties": {"s": {"type": "string"}},
                                      "required": ["s"], "additionalProperties": False})
    (c,) = engine.generate([request(backend, "Q:", g, max_tokens=3)], timeout=60)
    assert c.finish_reason == "length" and c.completion_tokens == 3  # as vLLM and OpenAI: cut, not completed


@pytest.mark.parametrize("asked, message", [
    ({"guided_regex": "("}, "not a valid regular expression"),
    ({"guided_json": "{not json"}, "not valid JSON"),
    ({"guided_json": [1, 2]}, "must be an object"),
    ({"guided_json": {"type": "strin"}}, "cannot be compiled"),
    ({"guided_choice": []}, "at least one choice"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "one kind of structured output"),
])
def test_bad_grammars_are_refused_with_the_reason(backend: FakeBackend, asked: dict[str, Any], message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        grammar(backend, **asked)


def test_text_response_format_is_free_text(backend: FakeBackend) -> None:
    assert grammar(backend, response_format={"type": "text"}) is None


# --- over HTTP, with the official openai client -------------------------------------------------------------------


@pytest.fixture()
def client(fake_backend: FakeBackend) -> Iterator[Any]:
    import openai
    import torch
    from fastapi.testclient import TestClient

    from llmforge.serve.app import create_app
    from llmforge.serve.settings import ServeSettings
    from tests.unit.serve.conftest import API_KEY

    threads = torch.get_num_threads()
    settings = ServeSettings(models={"fake": "fake"}, api_keys=[API_KEY], device="cpu", warmup=False)
    with TestClient(create_app(settings, loader=lambda ref, opts, name: fake_backend),
                    headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        while http.get("/ready").status_code != 200:
            pass
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=http, max_retries=0)
    torch.set_num_threads(threads)


def test_openai_client_parse_returns_the_pydantic_object(client: Any) -> None:
    """`client.chat.completions.parse(response_format=Model)`: the official structured-output flow."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=12)
        continent: Literal["Africa", "Europe", "Asia"]
        capital: bool
        rank: int = Field(ge=1, le=500)

    for temperature in (0.0, 1.0):
        reply = client.chat.completions.parse(model="fake", messages=[{"role": "user", "content": "A city?"}],
                                              response_format=City, temperature=temperature, max_tokens=200, n=2)
        for choice in reply.choices:
            assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, City)


def test_streamed_and_vllm_fields(client: Any) -> None:
    chunks = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "Pick"}], stream=True, max_tokens=50,
        extra_body={"guided_choice": ["alpha", "beta gamma"]})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in ("alpha", "beta gamma")
    done = client.completions.create(model="fake", prompt="Code:", max_tokens=30,
                                     extra_body={"guided_regex": "[a-f0-9]{8}"})
    assert re.fullmatch("[a-f0-9]{8}", done.choices[0].text) and done.choices[0].finish_reason == "stop"
    obj = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "{"}], max_tokens=200,
                                         response_format={"type": "json_object"}, temperature=0)
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_bad_grammar_is_a_400_naming_the_field(client: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"guided_regex": "(unclosed"})
    assert err.value.body["param"] == "guided_regex" and err.value.body["code"] == "invalid_grammar"
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "json_schema"})  # type: ignore[typeddict-item]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
             "type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Lima"]},
                                              "days": {"type": "integer", "minimum": 1, "maximum": 7}},
             "required": ["city", "days"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"]}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_required_and_named_tool_choice_constrain_the_reply_to_a_valid_call(client: Any, stream: bool) -> None:
    """On a model that would never call a tool (random logits), `required` and a named function still give a
    call whose arguments follow the function's parameters."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for choice, names in (("required", set(schemas)),
                          ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})):
        for seed in range(3):
            kw = {"model": "fake", "messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS,
                  "tool_choice": choice, "max_tokens": 200, "temperature": 1.0, "seed": seed}
            if stream:
                calls: dict[int, dict[str, str]] = {}
                finish = None
                for chunk in client.chat.completions.create(stream=True, **kw):
                    for c in chunk.choices:
                        finish = c.finish_reason or finish
                        for d in c.delta.tool_calls or []:
                            got = calls.setdefault(d.index, {"name": "", "arguments": ""})
                            got["name"] += d.function.name or ""
                            got["arguments"] += d.function.arguments or ""
                found = list(calls.values())
            else:
                reply = client.chat.completions.create(**kw).choices[0]
                finish = reply.finish_reason
                found = [{"name": c.function.name, "arguments": c.function.arguments}
                         for c in reply.message.tool_calls or []]
            assert finish == "tool_calls" and len(found) == 1, (choice, found)
            assert found[0]["name"] in names
            args = json.loads(found[0]["arguments"])
            jsonschema.validate(args, {**schemas[found[0]["name"]], "additionalProperties": False})


def test_tool_choice_with_a_response_format_is_refused(client: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="cannot both constrain"):
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                       tool_choice="required", response_format={"type": "json_object"})
