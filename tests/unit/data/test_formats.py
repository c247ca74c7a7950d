"""Formats: each normalizes to the right Example; every kind of bad record is a Problem naming line and field."""

from __future__ import annotations

from typing import Any

import pytest

from llmforge.data.formats import (
    FORMATS,
    Example,
    Message,
    ToolCall,
    detect_dataset_format,
    detect_format,
    normalize,
)
from llmforge.data.readers import RawRecord
from llmforge.errors import ConfigError, LlmforgeError, Problem

U, A, S = "user", "assistant", "system"


def _rec(data: dict[str, Any], line: int = 7) -> RawRecord:
    return RawRecord("data.jsonl", line, data)


def _ok(data: dict[str, Any], fmt: str = "auto", **kw: Any) -> Example:
    result = normalize(_rec(data), fmt, **kw)
    assert isinstance(result, Example), result
    return result


def _bad(data: dict[str, Any], fmt: str = "auto", **kw: Any) -> dict[str | None, str]:
    """field -> message for every problem of the record; each carries the record's source and line."""
    result = normalize(_rec(data), fmt, **kw)
    assert isinstance(result, list) and result, result
    assert all(isinstance(p, Problem) and (p.source, p.line) == ("data.jsonl", 7) for p in result)
    return {p.field: p.message for p in result}


def _chat(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, content) for role, content in turns)


CASES = [
    ("input_output", {"input": "Hi", "output": "Hello"}, _chat((U, "Hi"), (A, "Hello"))),
    ("alpaca", {"instruction": "Add", "input": "1 2", "output": "3"}, _chat((U, "Add\n\n1 2"), (A, "3"))),
    ("alpaca", {"instruction": "Add", "input": "", "output": "3"}, _chat((U, "Add"), (A, "3"))),
    ("alpaca", {"instruction": "Add", "output": "3"}, _chat((U, "Add"), (A, "3"))),
    ("dolly", {"instruction": "Sum", "context": "Text", "response": "R"}, _chat((U, "Sum\n\nText"), (A, "R"))),
    ("dolly", {"instruction": "Sum", "context": None, "response": "R"}, _chat((U, "Sum"), (A, "R"))),
    (
        "sharegpt",
        {
            "conversations": [
                {"from": "system", "value": "Be kind"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ]
        },
        _chat((S, "Be kind"), (U, "Q"), (A, "A")),
    ),
    (
        "messages",
        {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"x": 1}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "assistant", "content": "It is 42"},
            ]
        },
        (Message(U, "Q"), Message(A, "", (ToolCall("calc", '{"x": 1}', "c1"),)),
         Message("tool", "42", tool_call_id="c1"), Message(A, "It is 42")),
    ),
]


@pytest.mark.parametrize(("fmt", "data", "messages"), CASES)
def test_chat_formats_normalize(fmt: str, data: dict[str, Any], messages: tuple[Message, ...]) -> None:
    assert detect_format(data) == fmt
    for given in ("auto", fmt):
        example = _ok(data, given)
        assert example == Example(kind="chat", source="data.jsonl", line=7, messages=messages)


def test_text_and_preference_normalize() -> None:
    assert _ok({"text": "Once upon"}) == Example(kind="text", source="data.jsonl", line=7, text="Once upon")
    pref = _ok({"prompt": "Q?", "chosen": "good", "rejected": "bad"})
    assert (pref.kind, pref.messages) == ("preference", _chat((U, "Q?")))
    assert (pref.chosen, pref.rejected) == ("good", "bad")
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    pref = _ok({"prompt": prompt, "chosen": "good", "rejected": "bad"}, "preference")
    assert pref.messages == _chat((S, "S"), (U, "Q"))


def test_detect_format_by_keys() -> None:
    assert detect_format({"text": "x", "prompt": "p", "chosen": "c", "rejected": "r"}) == "preference"
    assert detect_format({"instruction": "i", "input": "", "output": "o"}) == "alpaca"
    assert detect_format({"question": "q"}) is None
    assert set(FORMATS) == {"input_output", "alpaca", "dolly", "sharegpt", "messages", "text", "preference"}


def test_detect_dataset_format_majority_and_error() -> None:
    records = [{"text": "a"}, {"input": "i", "output": "o"}, {"input": "i", "output": "o"}, {"zzz": 1}]
    assert detect_dataset_format(records) == "input_output"
    assert detect_dataset_format([{"q": "x", "a": "y"}], columns={"input": "q", "output": "a"}) == "input_output"
    with pytest.raises(LlmforgeError) as err:
        detect_dataset_format([{"question": "q", "answer": "a"}])
    message = str(err.value)
    assert "Fields seen: answer, question" in message
    assert "input_output: input, output" in message and "alpaca: instruction, output (optional: input)" in message
    with pytest.raises(LlmforgeError, match="empty"):
        detect_dataset_format([])


def test_column_mapping_applies_and_problems_use_user_names() -> None:
    columns = {"input": "question", "output": "answer"}
    example = _ok({"question": "Q", "answer": "A", "input": "x"}, columns=columns)
    assert example.messages == _chat((U, "Q"), (A, "A"))
    dialog = {"dialog": [{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}]}
    assert _bad(dialog, columns={"messages": "dialog"}) == {
        "dialog[1].role": "unknown role 'bot'; allowed: system, user, assistant, tool"
    }
    problems = _bad({"answer": "A", "input": "same-named column is not used"}, "input_output", columns=columns)
    assert problems == {"question": "missing; format 'input_output' needs: question, answer"}
    with pytest.raises(ConfigError, match="unknown field 'query'"):
        normalize(_rec({"text": "x"}), columns={"query": "q"})


def test_group_by_column() -> None:
    assert _ok({"text": "x", "doc_id": 12}, group_by="doc_id").group == "12"
    assert _bad({"text": "x"}, group_by="doc_id")["doc_id"].startswith("missing")
    assert _bad({"text": "x", "doc_id": None}, group_by="doc_id")["doc_id"].startswith("is null")


def test_missing_field_names_format_needs() -> None:
    assert _bad({"instruction": "Do"}, "alpaca") == {
        "output": "missing; format 'alpaca' needs: instruction, output (optional: input)"
    }


def test_wrong_type_and_empty_content() -> None:
    problems = _bad({"input": 3, "output": "   "})
    assert problems == {"input": "expected a string, got int", "output": "is empty"}
    assert _bad({"text": None}) == {"text": "expected a string, got null"}
    assert _bad({"instruction": "x", "input": ["a"], "output": "y"}) == {"input": "expected a string, got list"}


def test_messages_many_problems_listed_at_once() -> None:
    data = {
        "messages": [
            {"role": "user", "content": ""},
            {"role": "bot", "content": "hi"},
            {"role": "assistant", "content": 5},
            {"content": "no role"},
            "not an object",
        ]
    }
    assert _bad(data) == {
        "messages[0].content": "is empty",
        "messages[1].role": "unknown role 'bot'; allowed: system, user, assistant, tool",
        "messages[2].content": "expected a string, got int",
        "messages[3].role": "missing; allowed roles: system, user, assistant, tool",
        "messages[4]": "expected an object, got string; each message needs 'role' and 'content'",
    }


def _msgs(*roles: str) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]}


def test_conversation_order_rules() -> None:
    assert _bad(_msgs(U, A, U)) == {"messages[2].role": "last message must be from the assistant"}
    assert _bad(_msgs(S, U)) == {"messages": "has no assistant message"}
    late_system = {"messages[2].role": "a system message is allowed only as the first message"}
    assert _bad(_msgs(U, A, S, U, A)) == late_system
    assert "cannot follow a 'user' message" in _bad(_msgs(U, U, A))["messages[1].role"]
    assert "must be from the user, got 'assistant'" in _bad(_msgs(S, A, U, A))["messages[1].role"]
    assert _bad({"messages": []}) == {"messages": "is empty"}
    assert _bad({"messages": "hi"}) == {"messages": "expected a list of messages, got string"}


def test_sharegpt_problems_name_from_and_value() -> None:
    data = {"conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": ""}]}
    problems = _bad(data)
    assert problems == {
        "conversations[1].from": "unknown role 'bot'; allowed: human, user, gpt, assistant, system, tool",
        "conversations[1].value": "is empty",
    }


def test_preference_problems() -> None:
    problems = _bad({"prompt": 1, "chosen": "", "rejected": 2})
    assert problems == {
        "prompt": "expected a string or a list of messages, got int",
        "chosen": "is empty",
        "rejected": "expected a string, got int",
    }
    assert "is the same as 'chosen'" in _bad({"prompt": "Q", "chosen": "A", "rejected": "A"})["rejected"]
    prompt = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert _bad({"prompt": prompt, "chosen": "x", "rejected": "y"}) == {
        "prompt[1].role": "last message must be from the user"
    }


def test_unknown_record_and_unknown_format() -> None:
    (problem,) = normalize(_rec({"question": "q"}))  # type: ignore[misc]
    assert problem.field is None and "no known format fits this record's fields (question)" in problem.message
    with pytest.raises(ConfigError, match="unknown format 'chatml'; allowed: auto, input_output"):
        normalize(_rec({"text": "x"}), "chatml")
