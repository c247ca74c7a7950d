"""Tool calling (issue #19, serving side): the parsers alone, then the official `openai` client's whole flow
(tools -> tool_calls -> the tool's result -> the answer), streamed and not, over a backend that replies with
scripted text (the tiny tokenizer is byte-level, so any text is a token sequence)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
from llmforge.serve.tools import (
    HermesParser,
    Llama3JsonParser,
    ToolParser,
    parse_all,
    tool_format,
)
from tests.unit.serve.conftest import API_KEY, FakeBackend

# A ChatML template that shows tools and earlier calls the way Hermes/Qwen templates do.
HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}{% if m.role == 'tool' %} [{{ m.tool_call_id }}]{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}{% for m in messages %}<|start_header_id|>{{ m.role }}"
    "<|end_header_id|>\n\n{% if m.tool_calls %}{{ m.tool_calls[0].function | tojson }}{% else %}{{ m.content }}"
    "{% endif %}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
# Written for these tests in the shape of Mistral 7B Instruct v0.3's template: tools before the instruction, calls
# as a `[TOOL_CALLS]` JSON list carrying their ids, results with `call_id`, and its refusal of any id that is not
# 9 characters long.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role == 'user' %}{% if tools and loop.first %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]"
    "{% endif %}[INST] {{ m.content }}[/INST]"
    "{% elif m.tool_calls %}[TOOL_CALLS] [{% for c in m.tool_calls %}"
    "{% if c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}"
    "{% endif %}{{ {'name': c.function.name, 'arguments': c.function.arguments, 'id': c.id} | tojson }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}"
    "{% elif m.role == 'tool' %}{% if m.tool_call_id | length != 9 %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}"
    "[TOOL_RESULTS] {\"content\": {{ m.content }}, \"call_id\": \"{{ m.tool_call_id }}\"}[/TOOL_RESULTS]"
    "{% else %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ANSWER = "It is 21 C in Paris."


def feed_pieces(parser: ToolParser, text: str, size: int) -> tuple[str, list[Any]]:
    """A reply fed `size` characters at a time, as a stream delivers it: (content released, calls)."""
    content, calls = "", []
    for at in range(0, len(text), size):
        out = parser.feed(text[at:at + size])
        content, calls = content + out.content, calls + out.calls
    out = parser.finish()
    return content + out.content, calls + out.calls


# --- the parsers -----------------------------------------------------------------------------------------------------


def test_hermes_parses_several_calls_and_keeps_the_text_around_them() -> None:
    text = ('Sure.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
            '<tool_call>{"name": "b", "arguments": {"y": "é"}}</tool_call>\n')
    content, calls = parse_all(HermesParser(), text)
    assert content == "Sure." and [(c.name, json.loads(c.arguments)) for c in calls] == [("a", {"x": 1}),
                                                                                          ("b", {"y": "é"})]
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id
    for size in (1, 3, 7, 1000):  # however the stream cuts it, the same content and calls
        streamed, scalls = feed_pieces(HermesParser(), text, size)
        assert streamed == content and [(c.name, c.arguments) for c in scalls] == [(c.name, c.arguments)
                                                                                   for c in calls]
    assert parse_all(HermesParser(), '<tool_call>{"name": "a", "arguments": {}}</tool_call>')[0] is None
    # the model stopped before </tool_call>: still a call when its JSON is complete
    assert [c.name for c in parse_all(HermesParser(), '<tool_call>{"name": "a", "arguments": {}}')[1]] == ["a"]
    # arguments written as JSON text, or under Llama's name
    assert parse_all(HermesParser(), '<tool_call>{"name": "a", "arguments": "{\\"k\\": 2}"}</tool_call>'
                     )[1][0].arguments == '{"k": 2}'


def test_hermes_keeps_malformed_blocks_and_plain_text_as_content() -> None:
    bad = '<tool_call>{"name": "a", "arguments": {"x": </tool_call>'
    assert parse_all(HermesParser(), bad) == (bad, [])
    assert parse_all(HermesParser(), "<tool_call>[1, 2]</tool_call>") == ("<tool_call>[1, 2]</tool_call>", [])
    content, calls = parse_all(HermesParser(), bad + '<tool_call>{"name": "b"}</tool_call>')
    assert content == bad and [(c.name, c.arguments) for c in calls] == [("b", "{}")]
    assert parse_all(HermesParser(), "a < b, and <tool_ is not a tag") == ("a < b, and <tool_ is not a tag", [])
    assert feed_pieces(HermesParser(), "x <tool_", 1) == ("x <tool_", [])  # held back, then released at the end


def test_llama3_json_parses_the_whole_reply_or_none_of_it() -> None:
    one = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    for text in (one, "<|python_tag|>" + one, "  " + one + "\n"):
        content, calls = parse_all(Llama3JsonParser(), text)
        assert content is None and [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]
    two = '{"name": "a", "parameters": {}}; {"name": "b", "arguments": {"k": [1]}}'
    for text in (two, f"[{two.replace(';', ',')}]"):
        assert [(c.name, c.arguments) for c in parse_all(Llama3JsonParser(), text)[1]] == [("a", "{}"),
                                                                                          ("b", '{"k": [1]}')]
        assert [c.name for c in feed_pieces(Llama3JsonParser(), text, 2)[1]] == ["a", "b"]
    for text in ('{"name": "a", "parameters": {', '{"city": "Paris"}', '{"name": "a"}; oops', "Hello {there}"):
        assert parse_all(Llama3JsonParser(), text) == (text, [])
        assert feed_pieces(Llama3JsonParser(), text, 3) == (text, [])
    parser = Llama3JsonParser()  # plain text is released as it comes, not held to the end
    assert parser.feed("Hel").content == "Hel" and parser.feed("lo").content == "lo"


def test_the_format_follows_the_family_then_the_template() -> None:
    assert tool_format(None, "qwen2") == "hermes"
    assert tool_format(HERMES_TEMPLATE) == "hermes"
    assert tool_format(LLAMA3_TEMPLATE, "llama") == "llama3_json"
    assert tool_format("{{ '<|python_tag|>' }}") == "llama3_json"
    assert tool_format("<|im_start|>", "llama") == "hermes"  # SmolLM2: a Llama with ChatML
    assert tool_format(None) == "hermes"


# --- end to end through the openai client ----------------------------------------------------------------------------


class ScriptedBackend(FakeBackend):
    """Replies `reply(prompt text)`, token by token, then eos; remembers every prompt it was given."""

    def __init__(self, tokenizer: Any, reply: Callable[[str], str]) -> None:
        super().__init__(tokenizer, max_model_len=4096)
        self.reply = reply
        self.prompts: list[str] = []

    def _next(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        out = torch.full((len(rows), self.vocab), -1e4)  # (B, V)
        for i, row in enumerate(rows):
            out[i, row["ids"][min(row["at"], len(row["ids"]) - 1)]] = 1e4
        return out

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        rows = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            self.prompts.append(text)
            ids = self.tokenizer(self.reply(text), add_special_tokens=False)["input_ids"] + [self.eos]
            rows.append({"ids": ids, "at": 0})
        return self._next(rows), rows

    def decode(self, state: list[dict[str, Any]], tokens: torch.Tensor) -> torch.Tensor:
        for row in state:
            row["at"] += 1
        return self._next(state)


def weather_script(prompt: str) -> str:
    return ANSWER if "[call_" in prompt else CALL  # a tool's result in the prompt: answer, else call


@pytest.fixture()
def scripted(tiny_tokenizer: Any) -> Iterator[Callable[..., tuple[openai.OpenAI, ScriptedBackend]]]:
    clients: list[TestClient] = []
    threads = torch.get_num_threads()

    def start(reply: Callable[[str], str] = weather_script,
              template: str = HERMES_TEMPLATE) -> tuple[openai.OpenAI, ScriptedBackend]:
        tokenizer = copy.deepcopy(tiny_tokenizer)
        tokenizer.chat_template = template
        backend = ScriptedBackend(tokenizer, reply)
        settings = ServeSettings(models={"fake": "fake"}, api_keys=[API_KEY], device="cpu", warmup=False)
        http = TestClient(create_app(settings, loader=lambda ref, opts, name: backend),
                          headers={"Authorization": f"Bearer {API_KEY}"})
        http.__enter__()
        clients.append(http)
        deadline = time.monotonic() + 30
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, http.get("/ready").text
            time.sleep(0.01)
        return openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=http, max_retries=0), backend

    yield start
    for http in clients:
        http.__exit__(None, None, None)
    torch.set_num_threads(threads)


def _round_trip(client: openai.OpenAI, backend: ScriptedBackend, first: Any, shown: tuple[str, ...] = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', '{"temp_c": 21} [call_')
                ) -> None:
    """The second half of the flow: the call and its result sent back, the model answers."""
    (call,) = first.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    final = client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == ANSWER and final.choices[0].finish_reason == "stop"
    assert not final.choices[0].message.tool_calls
    # the template saw the tools, the earlier call (arguments as a mapping) and the result (with its call id)
    prompt = backend.prompts[-1]
    assert '"get_weather"' in prompt and "Tools: " in prompt
    for text in shown:
        assert text in prompt, prompt


def test_openai_client_tool_flow(scripted: Any) -> None:
    client, backend = scripted()
    r = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                       tools=[WEATHER], tool_choice="auto")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    _round_trip(client, backend, choice.message)


def test_openai_client_tool_flow_streamed(scripted: Any) -> None:
    client, backend = scripted()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    chunks = list(client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER], stream=True))
    deltas = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert all(d.id is None and d.function.name is None for d in deltas[1:])  # then only argument chunks
    assert "".join(d.function.arguments or "" for d in deltas) == '{"city": "Paris"}'
    assert "<tool_call>" not in "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["tool_calls"]
    both = list(client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER], stream=True, n=2))
    for i in (0, 1):  # each choice parsed on its own, its calls numbered from 0
        first = [tc for c in both for ch in c.choices if ch.index == i for tc in ch.delta.tool_calls or ()][0]
        assert first.index == 0 and first.function.name == "get_weather"
    # the client's own accumulator builds the same message the non-streamed answer has
    with client.chat.completions.stream(model="fake", messages=messages, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls" and final.choices[0].message.content == "Let me check."
    # the helper's message appended as it is (it carries the client's own `parsed` fields), answered streamed
    reply = final.choices[0].message
    messages += [reply, {"role": "tool", "tool_call_id": reply.tool_calls[0].id, "content": '{"temp_c": 21}'}]
    chunks = list(client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    assert f'{{"temp_c": 21}} [{reply.tool_calls[0].id}]' in backend.prompts[-1]
    _round_trip(client, backend, reply)


def test_malformed_calls_tool_choice_none_and_llama3(scripted: Any) -> None:
    bad = '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    client, _ = scripted(lambda prompt: bad)
    user = [{"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER])
    assert r.choices[0].message.content == bad and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="fake", messages=user, tools=[WEATHER], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == bad

    client, _ = scripted()
    for choice in ("none", None):  # none: never parsed; no tools at all: as before
        kw = {"tools": [WEATHER], "tool_choice": choice} if choice else {}
        r = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], **kw)
        assert r.choices[0].message.content == CALL and r.choices[0].finish_reason == "stop"
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER], tool_choice=named)
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(model="fake", messages=user, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(openai.BadRequestError, match="needs 'tools'"):
        client.chat.completions.create(model="fake", messages=user, tool_choice="required")

    call = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
    client, backend = scripted(lambda prompt: ANSWER if "<|start_header_id|>tool" in prompt else call,
                               LLAMA3_TEMPLATE)
    r = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER], tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    _round_trip(client, backend, r.choices[0].message,
                ('{"name": "get_weather", "arguments": {"city": "Paris"}}<|eot_id|>', '{"temp_c": 21}<|eot_id|>'))


def test_tokenize_renders_tools_as_the_chat_request_does(scripted: Any) -> None:
    client, _ = scripted()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER], max_tokens=1)
    http = client._client
    count = http.post("/tokenize", json={"messages": messages, "tools": [WEATHER]}).json()["count"]
    assert count == r.usage.prompt_tokens > http.post("/tokenize", json={"messages": messages}).json()["count"]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(parts=st.lists(st.sampled_from(["<tool_call>", "</tool_call>", "<tool_", "{", "}", '"name": "f"', ", ",
                                       '"arguments": {}', "<|python_tag|>", ";", " ", "\n", "[", "]", "hi", "é"]),
                      max_size=14),
       size=st.integers(1, 9))
def test_parsers_never_raise_and_streaming_equals_one_go(parts: list[str], size: int) -> None:
    text = "".join(parts)
    for parser in (HermesParser, Llama3JsonParser):
        content, calls = parse_all(parser(), text)
        streamed, scalls = feed_pieces(parser(), text, size)
        assert (content or "") == streamed and [(c.name, c.arguments) for c in calls] == [
            (c.name, c.arguments) for c in scalls]


def test_parallel_tool_calls_false_keeps_the_first_call(scripted: Any) -> None:
    two = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
           '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    client, _ = scripted(lambda prompt: two)
    user = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    for parallel, cities in ((True, ["Paris", "Rome"]), (False, ["Paris"])):
        r = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER],
                                           parallel_tool_calls=parallel)
        assert [json.loads(c.function.arguments)["city"] for c in r.choices[0].message.tool_calls] == cities
        chunks = list(client.chat.completions.create(model="fake", messages=user, tools=[WEATHER], stream=True,
                                                     parallel_tool_calls=parallel))
        calls = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
        assert sorted({d.index for d in calls}) == list(range(len(cities)))
        assert [json.loads(d.function.arguments)["city"] for d in calls if d.function.arguments] == cities
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_mistral_format_ids_and_round_trip(scripted: Any) -> None:
    """Mistral's format: a `[TOOL_CALLS]` JSON list (the tag often decoded away), 9-character ids, and ids of any
    other shape sent back by a client mapped for the template instead of a 400 from its raise_exception."""
    from llmforge.models.chat import template_id
    from llmforge.serve.tools import mistral_id, new_parser, parse_all, tool_format

    assert tool_format(MISTRAL_TEMPLATE) == tool_format(None, "mistral") == "mistral"
    listed = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    for reply in (f"[TOOL_CALLS] {listed}", f" {listed}"):
        content, (call,) = parse_all(new_parser("mistral"), reply)
        assert content is None and call.name == "get_weather" and len(call.id) == 9 and call.id.isalnum()
    assert parse_all(new_parser("mistral"), "It is sunny.") == ("It is sunny.", [])
    assert len({mistral_id() for _ in range(50)}) == 50

    client, backend = scripted(lambda prompt: ANSWER if "[TOOL_RESULTS]" in prompt else listed, MISTRAL_TEMPLATE)
    user = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER]).choices[0]
    (call,) = first.message.tool_calls
    assert first.finish_reason == "tool_calls" and len(call.id) == 9 and call.id.isalnum()
    assert "[AVAILABLE_TOOLS]" in backend.prompts[-1]
    for sent_id in (call.id, "call_0123456789abcdef01234567"):  # ours back, and an OpenAI-shaped one
        history = [*user, {"role": "assistant", "content": None, "tool_calls": [
            {"id": sent_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": sent_id, "content": '{"temp_c": 21}'}]
        final = client.chat.completions.create(model="fake", messages=history, tools=[WEATHER]).choices[0]
        assert final.message.content == ANSWER and final.finish_reason == "stop"
        mapped = template_id(sent_id)
        assert f'"id": "{mapped}"' in backend.prompts[-1] and f'"call_id": "{mapped}"' in backend.prompts[-1]
    assert template_id(call.id) == call.id  # a 9-character id is kept as it is
    required = client.chat.completions.create(model="fake", messages=user, tools=[WEATHER], tool_choice="required")
    assert json.loads(required.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
