"""Tool-calling chats in prepare (issue #19): OpenAI `messages` with tool_calls, tool results and `tools`, rendered
through Qwen2.5's and Llama 3.1's published templates (templates/, as llama.cpp vendors them) the way serve renders
them; only the assistant's calls and content are trained, never a tool result; bad records name file, line, field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmforge.config import ModelConfig
from llmforge.data.config import DataConfig, SplitConfig
from llmforge.data.formats import Example, normalize
from llmforge.data.readers import RawRecord
from llmforge.data.tokenize import IGNORE, RecordError, render_chat, tokenize_batch
from llmforge.errors import DataError
from llmforge.prepare.config import PrepareConfig
from llmforge.prepare.runner import prepare
from tests.helpers import write_jsonl

TEMPLATES = Path(__file__).parent / "templates"
QWEN25, LLAMA31 = TEMPLATES / "qwen2.5-instruct.jinja", TEMPLATES / "llama-3.1-instruct.jinja"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def call(name: str, arguments: Any, id: str = "c1") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def weather_record(arguments: Any = '{"city": "Paris"}') -> dict[str, Any]:
    return {"tools": [WEATHER], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", arguments)]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "RESULT 21 C, sunny"},
        {"role": "assistant", "content": "It is 21 C and sunny."}]}


def example(data: dict[str, Any]) -> Example:
    result = normalize(RawRecord("d.jsonl", 3, data))
    assert isinstance(result, Example), result
    return result


def problems(data: dict[str, Any]) -> dict[str | None, str]:
    result = normalize(RawRecord("d.jsonl", 3, data))
    assert isinstance(result, list), result
    return {p.field: p.message for p in result}


@pytest.fixture(scope="module")
def tool_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The qwen2 and llama3 family tokenizers (tests/families.py) with their tool-calling templates."""
    from tests.families import BUILDERS

    root = tmp_path_factory.mktemp("tool-families")
    out = {}
    for family, template in (("qwen2.5", QWEN25), ("llama3.1", LLAMA31)):
        tok = BUILDERS[family.split(".")[0]](root)[0]
        tok.chat_template = template.read_text(encoding="utf-8")
        out[family] = tok
    return out


def trained_text(tok: Any, ex: Example) -> tuple[str, Any]:
    (sample,) = tokenize_batch(tok, [render_chat(tok, ex.turns(), tools=ex.template_tools())])
    return tok.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE]), sample


# --- the format ------------------------------------------------------------------------------------------------------


def test_tool_record_normalizes_with_arguments_as_text_or_object() -> None:
    as_text, as_object = example(weather_record()), example(weather_record({"city": "Paris"}))
    assert as_text == as_object
    assistant = as_text.messages[2]
    assert (assistant.content, assistant.tool_calls[0].name, json.loads(assistant.tool_calls[0].arguments)) == (
        "", "get_weather", {"city": "Paris"})
    assert as_text.messages[3].tool_call_id == "c1" and as_text.template_tools() == [WEATHER]
    assert as_text.turns()[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert "tool_calls" not in as_text.turns()[4]  # Llama 3.1's template tests the key


def test_turns_are_the_ones_serve_passes_the_template() -> None:
    """One helper (llmforge.models.chat.template_turn) builds both sides' turns."""
    from llmforge.serve import schemas as s
    from llmforge.serve.tools import chat_turns

    record = weather_record()
    served = chat_turns([s.ChatMessage(**m) for m in record["messages"]])
    assert served == example(record).turns()


def test_bad_tool_records_name_the_field() -> None:
    record = weather_record()
    del record["messages"][3]["tool_call_id"]
    assert "a tool message names the call it answers" in problems(record)["messages[3].tool_call_id"]
    bad = problems(weather_record("{city: Paris"))
    assert "is not valid JSON" in bad["messages[2].tool_calls[0].function.arguments"] and len(bad) == 1
    assert "got list" in problems(weather_record("[1]"))["messages[2].tool_calls[0].function.arguments"]
    record = weather_record()
    record["messages"][3]["tool_call_id"] = "c9"
    assert "'c9' is not the id of a call" in problems(record)["messages[3].tool_call_id"]
    record = weather_record()
    record["messages"][2] = {"role": "assistant", "content": "I will look."}
    assert "has no tool_calls" in problems(record)["messages[3].tool_call_id"]
    record = weather_record()
    record["messages"][1]["tool_calls"] = [call("x", "{}")]
    assert "only an assistant message" in problems(record)["messages[1].tool_calls"]
    record = weather_record()
    record["tools"] = [{"type": "function", "function": {"description": "no name"}}]
    assert problems(record) == {"tools[0].function.name": "missing; every tool has a name"}
    record = weather_record()
    record["messages"][2]["tool_calls"][0]["function"].pop("name")
    assert problems(record) == {"messages[2].tool_calls[0].function.name": "missing"}


# --- rendering and masking -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "written"), [
    ("qwen2.5", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
                "It is 21 C and sunny.<|im_end|>"),
    ("llama3.1", '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>It is 21 C and sunny.<|eot_id|>'),
])
def test_calls_and_answers_are_trained_and_tool_results_are_not(tool_tokenizers, family, written) -> None:
    from llmforge.serve import schemas as s
    from llmforge.serve.prompts import chat_ids
    from llmforge.serve.tools import chat_turns, template_tools

    tok, record = tool_tokenizers[family], weather_record()
    text, sample = trained_text(tok, example(record))
    assert text == written
    # serve's ids for the same conversation are prepare's: the whole chat, and the prompt before each answer
    msgs, tools = [s.ChatMessage(**m) for m in record["messages"]], template_tools([s.Tool(**WEATHER)])
    assert chat_ids(tok, chat_turns(msgs), "tiny", add_generation_prompt=False, tools=tools) == sample.input_ids
    for i in (2, 4):
        prompt = chat_ids(tok, chat_turns(msgs[:i]), "tiny", tools=tools)
        assert sample.input_ids[: len(prompt)] == prompt and sample.labels[len(prompt) - 1] == IGNORE
        assert sample.labels[len(prompt)] != IGNORE


lower = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12).map(str.strip).filter(bool)
names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
arguments = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                            st.one_of(lower, st.integers(-999, 999), st.booleans()), max_size=3)


@st.composite
def tool_chats(draw: Any, single_call: bool) -> dict[str, Any]:
    """A tool-calling conversation: user asks (ASK ...), the assistant calls tools (maybe with content), each tool
    answers (RESULT ...), the assistant answers; user, tool and system text are upper case, the model's lower."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": "SYSTEM " + draw(lower)})
    for turn in range(draw(st.integers(1, 2))):
        messages.append({"role": "user", "content": "ASK " + draw(lower)})
        if draw(st.booleans()) or turn == 0:
            calls = [call(draw(names), draw(arguments), f"c{turn}{j}")
                     for j in range(1 if single_call else draw(st.integers(1, 2)))]
            content = None if single_call else draw(st.one_of(st.none(), lower))
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": "RESULT " + draw(lower)} for c in calls]
        messages.append({"role": "assistant", "content": draw(lower)})
    return {"messages": messages, "tools": [WEATHER] if draw(st.booleans()) else None}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), family=st.sampled_from(["qwen2.5", "llama3.1"]))
def test_property_trained_tokens_hold_every_call_and_no_tool_result(tool_tokenizers, data, family) -> None:
    record = data.draw(tool_chats(single_call=family == "llama3.1"))  # Llama 3.1's template: one call a turn
    tok, ex = tool_tokenizers[family], example(record)
    text, sample = trained_text(tok, ex)
    end = {"qwen2.5": "<|im_end|>", "llama3.1": "<|eot_id|>"}[family]
    key = {"qwen2.5": "arguments", "llama3.1": "parameters"}[family]
    expected = ""
    for m in record["messages"]:
        if m["role"] != "assistant":
            continue
        calls = [f'{{"name": "{c["function"]["name"]}", "{key}": {json.dumps(c["function"]["arguments"])}}}'
                 for c in m.get("tool_calls") or ()]
        if family == "qwen2.5":  # its newline before the first call is the prompt's when no content leads
            blocks = "".join(f"\n<tool_call>\n{c}\n</tool_call>" for c in calls)
            expected += ((m["content"] or "") + blocks).removeprefix("\n") + end
        else:  # Llama 3.1 writes the call alone
            expected += (calls[0] if calls else m["content"]) + end
    assert text == expected  # exactly the model's turns: each call's name and arguments, its content, its end
    assert not any(w in text for w in ("RESULT", "ASK", "SYSTEM", "get_weather"))


# --- templates without tool support, and prepare end to end ----------------------------------------------------------


def test_a_template_without_tools_is_refused_naming_the_field(tool_tokenizers) -> None:
    from llmforge.models.chat import TEMPLATES

    tok = tool_tokenizers["qwen2.5"]
    saved, tok.chat_template = tok.chat_template, TEMPLATES["chatml"]
    try:
        ex = example(weather_record())
        with pytest.raises(RecordError, match="does not render tools") as err:
            render_chat(tok, ex.turns(), tools=ex.template_tools())
        assert err.value.field == "tools"
        with pytest.raises(RecordError, match="does not render tool calls"):  # no tools given: the calls dropped
            render_chat(tok, ex.turns())
    finally:
        tok.chat_template = saved


def _cfg(model: Path, data: Path, out: Path, **opts: Any) -> PrepareConfig:
    return PrepareConfig(model=ModelConfig(name_or_path=str(model)), output_dir=out,
                         data=DataConfig(path=[str(data)], split=SplitConfig(validation=0, test=0), **opts))


def long_context(model_dir: Path, root: Path, positions: int = 2048) -> Path:
    """A copy of `model_dir` whose config takes `positions` tokens (rotary positions: nothing else changes), for
    records longer than the tiny model's 256: Qwen2.5's template writes a long tool preamble."""
    import shutil

    copy = shutil.copytree(model_dir, root / "long-context-model")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": positions}))
    return copy


def test_prepare_trains_tool_chats_and_reports_bad_ones(tiny_model_dir: Path, tmp_path: Path) -> None:
    tiny_model_dir = long_context(tiny_model_dir, tmp_path)
    good = [weather_record(), {**weather_record(), "messages": [*weather_record()["messages"][:4],
                                                                {"role": "assistant", "content": "Sunny, 21 C."}]}]
    no_id = weather_record()
    del no_id["messages"][3]["tool_call_id"]
    data = write_jsonl(tmp_path / "tools.jsonl", [*good, no_id, weather_record("{bad json")])
    with pytest.raises(DataError) as err:
        prepare(_cfg(tiny_model_dir, data, tmp_path / "strict", chat_template=str(QWEN25)))
    message = str(err.value)
    assert f"{data}:3: field 'messages[3].tool_call_id'" in message
    assert f"{data}:4: field 'messages[2].tool_calls[0].function.arguments'" in message
    report = prepare(_cfg(tiny_model_dir, data, tmp_path / "lenient", chat_template=str(QWEN25),
                          strict=False)).metrics
    assert report["records_kept"] == 2 and report["dropped"]["invalid_record"] == 2
    rejects = [json.loads(x) for x in (tmp_path / "lenient" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [3, 4]
    # the default (ChatML) template shows no tools: each tool record is refused, naming it, never trained blind
    with pytest.raises(DataError) as err:
        prepare(_cfg(tiny_model_dir, write_jsonl(tmp_path / "ok.jsonl", good), tmp_path / "chatml",
                     chat_template="chatml"))
    assert f"{tmp_path / 'ok.jsonl'}:1: field 'tools': the chat template does not render tools" in str(err.value)


def test_mistral_template_gets_nine_character_ids_in_prepare_and_serve(tmp_path: Path) -> None:
    """A template that refuses call ids other than 9 characters (Mistral's): a record's own ids ("c1") are mapped
    for it, alike in the call and its result, and alike in prepare and serve, so the record trains instead of
    failing in the template's raise_exception."""
    from llmforge.models.chat import template_id
    from llmforge.serve import schemas as s
    from llmforge.serve.prompts import chat_ids
    from llmforge.serve.tools import chat_turns, template_tools
    from tests.families import BUILDERS
    from tests.unit.serve.test_serve_tools import MISTRAL_TEMPLATE

    tok = BUILDERS["mistral"](tmp_path)[0]
    tok.chat_template = MISTRAL_TEMPLATE
    record = weather_record()
    record["messages"] = record["messages"][1:]  # this template has no system role
    text, sample = trained_text(tok, example(record))
    mapped = template_id("c1")
    assert len(mapped) == 9 and mapped.isalnum()
    call_text = f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": {{"city": "Paris"}}, "id": "{mapped}"}}]'
    assert text.replace(" ", "") == f"{call_text}</s>It is 21 C and sunny.</s>".replace(" ", "")
    assert "RESULT" not in text  # the tool's result is never trained
    msgs = [s.ChatMessage(**m) for m in record["messages"]]
    assert chat_ids(tok, chat_turns(msgs), "tiny", add_generation_prompt=False,
                    tools=template_tools([s.Tool(**WEATHER)])) == sample.input_ids
