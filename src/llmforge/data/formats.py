"""Record formats: detect which one a record is in, validate it, and normalize it to one `Example`.

Every format becomes one of three kinds: a chat (a list of messages ending with the assistant), plain text,
or a preference pair. A `messages` chat may call tools, as OpenAI's API spells it: assistant messages with
`tool_calls` (their `content` then may be null), `tool` messages answering a call by its `tool_call_id`, and the
record's `tools` (OpenAI function specs) for the chat template to show. Validation lists every problem of a record
at once, each naming the field ("output", "messages[2].role") and what is allowed, so a dataset can be fixed in
one pass.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmforge.data.readers import RawRecord
from llmforge.errors import ConfigError, LlmforgeError, Problem
from llmforge.models.chat import template_turn

FORMATS: tuple[str, ...] = ("input_output", "alpaca", "dolly", "sharegpt", "messages", "text", "preference")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "input_output": ("input", "output"),
    "alpaca": ("instruction", "output"),
    "dolly": ("instruction", "response"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected"),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {"alpaca": ("input",), "dolly": ("context",), "messages": ("tools",)}
# Most specific first: an alpaca record also has "input" and "output", a preference record may have "text".
_DETECT_ORDER = ("preference", "messages", "sharegpt", "dolly", "alpaca", "input_output", "text")
# Every canonical field name, the keys allowed in `columns`.
FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(field for fmt in FORMATS for field in (*_REQUIRED[fmt], *_OPTIONAL.get(fmt, ())))
)

_MESSAGE_ROLES = {role: role for role in ROLES}
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}
# Which role may follow which; None is the start of the conversation (after an optional system message).
_NEXT: dict[str | None, tuple[str, ...]] = {
    None: ("user",),
    "user": ("assistant",),
    "assistant": ("user", "tool"),
    "tool": ("tool", "assistant"),
}

_Issues = list[tuple[str | None, str]]  # (field path, message), collected before the record's Problems exist


@dataclass(frozen=True)
class ToolCall:
    """A call an assistant turn makes: `arguments` is the JSON object as text (canonical: `json.dumps`)."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """One chat turn; `role` is one of ROLES. An assistant turn may carry tool calls, a tool turn the call's id."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def turn(self) -> dict[str, Any]:
        """The message as chat templates take it, as serve passes it (`llmforge.models.chat.template_turn`)."""
        calls = [{"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in self.tool_calls]
        return template_turn(self.role, self.content, calls, self.tool_call_id)


@dataclass(frozen=True)
class Example:
    """A record in canonical form. Chat: messages alternate user/assistant after an optional system message
    and end with the assistant. Preference: messages are the prompt (ending with the user)."""

    kind: Literal["chat", "text", "preference"]
    source: str
    line: int
    messages: tuple[Message, ...] = ()
    text: str = ""
    chosen: str = ""
    rejected: str = ""
    group: str | None = None
    tools: tuple[str, ...] = ()  # each tool's spec as JSON text (kept hashable), in the record's order

    def turns(self) -> list[dict[str, Any]]:
        return [m.turn() for m in self.messages]

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The record's tools for the template's `tools`, or None when it has none."""
        return [json.loads(t) for t in self.tools] or None


def detect_format(data: Mapping[str, Any]) -> str | None:
    """The format whose required keys `data` has (most specific first), or None if none fits."""
    return next((fmt for fmt in _DETECT_ORDER if all(key in data for key in _REQUIRED[fmt])), None)


def detect_dataset_format(
    first_records: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | None = None
) -> str:
    """The format of most of `first_records` (after the `columns` mapping); an error if none fits any."""
    if not first_records:
        raise LlmforgeError("no records to detect the data format from; the input is empty")
    mapped = [apply_columns(record, columns) for record in first_records]
    counts = Counter(fmt for fmt in map(detect_format, mapped) if fmt is not None)
    if counts:
        return max(counts, key=lambda fmt: (counts[fmt], -FORMATS.index(fmt)))
    seen = Counter(key for record in first_records for key in record)
    raise LlmforgeError(
        f"cannot tell the data format: none of the first {len(first_records)} records has the fields of a "
        f"known format. Fields seen: {', '.join(sorted(seen))}. Each format needs: {_needs_all()}. "
        "Map your columns with data.columns (e.g. {input: question, output: answer}) or set data.format."
    )


def _needs_all() -> str:
    return "; ".join(f"{fmt}: {_needs(fmt)}" for fmt in FORMATS)


def _needs(fmt: str, columns: Mapping[str, str] | None = None) -> str:
    """The fields `fmt` needs, in the user's column names where `columns` maps them."""
    names = dict(columns or {})
    text = ", ".join(names.get(key, key) for key in _REQUIRED[fmt])
    optional = [names.get(key, key) for key in _OPTIONAL.get(fmt, ())]
    return text + (f" (optional: {', '.join(optional)})" if optional else "")


def apply_columns(data: Mapping[str, Any], columns: Mapping[str, str] | None) -> dict[str, Any]:
    """Copy `data` with each canonical field taken from the user's column: {"input": "question"}."""
    mapped = dict(data)
    for field, column in (columns or {}).items():
        if field not in FIELDS:
            raise ConfigError(f"data.columns: unknown field '{field}'; allowed: {', '.join(FIELDS)}")
        if column in data:
            mapped[field] = data[column]
        else:  # the user said where this field lives: never fall back to a same-named column
            mapped.pop(field, None)
    return mapped


def normalize(
    record: RawRecord,
    fmt: str = "auto",
    columns: Mapping[str, str] | None = None,
    group_by: str | None = None,
) -> Example | list[Problem]:
    """Validate one record in format `fmt` ("auto": detect it); its `Example`, or all of its problems."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"data.format: unknown format '{fmt}'; allowed: auto, {', '.join(FORMATS)}")
    data = apply_columns(record.data, columns)
    chosen = detect_format(data) if fmt == "auto" else fmt
    if chosen is None:
        keys = ", ".join(sorted(map(str, record.data))) or "none"
        message = f"no known format fits this record's fields ({keys}); each format needs: {_needs_all()}"
        return [Problem(record.source, record.line, None, message)]
    needs = f"missing; format '{chosen}' needs: {_needs(chosen, columns)}"
    issues: _Issues = [(key, needs) for key in _REQUIRED[chosen] if key not in data]
    fields = _BUILDERS[chosen](data, issues)
    group = _group(record, group_by, issues)
    if issues:
        rename = dict(columns or {})
        return [Problem(record.source, record.line, _renamed(path, rename), msg) for path, msg in issues]
    return Example(source=record.source, line=record.line, group=group, **fields)


def _renamed(path: str | None, rename: Mapping[str, str]) -> str | None:
    """Show a field path in the user's column names: "messages[2].role" -> "dialog[2].role"."""
    if path is None:
        return None
    cut = min((i for i in (path.find("["), path.find(".")) if i >= 0), default=len(path))
    return rename.get(path[:cut], path[:cut]) + path[cut:]


def _group(record: RawRecord, group_by: str | None, issues: _Issues) -> str | None:
    if group_by is None:
        return None
    if group_by not in record.data:
        issues.append((group_by, "missing; data.split (group_by or column) names this column"))
        return None
    value = record.data[group_by]
    if value is None:
        issues.append((group_by, "is null; data.split (group_by or column) needs a value in every record"))
        return None
    return value if isinstance(value, str) else str(value)


def _type_name(value: Any) -> str:
    names = {str: "string", bool: "bool", int: "int", float: "float", list: "list", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _text(data: Mapping[str, Any], key: str, issues: _Issues, optional: bool = False) -> str:
    """The string at `key`; "" when absent (reported by the caller if required) or an optional null."""
    if key not in data or (optional and data[key] is None):
        return ""
    return _string(data[key], key, issues, allow_empty=optional)


def _string(value: Any, path: str, issues: _Issues, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        issues.append((path, f"expected a string, got {_type_name(value)}"))
        return ""
    if not allow_empty and not value.strip():
        issues.append((path, "is empty"))
    return value


def _joined(first: str, extra: str) -> str:
    return f"{first}\n\n{extra}" if extra.strip() else first


def _pair(user: str, assistant: str) -> dict[str, Any]:
    return {"kind": "chat", "messages": (Message("user", user), Message("assistant", assistant))}


def _input_output(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    return _pair(_text(data, "input", issues), _text(data, "output", issues))


def _alpaca(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    instruction = _text(data, "instruction", issues)
    user = _joined(instruction, _text(data, "input", issues, optional=True))
    return _pair(user, _text(data, "output", issues))


def _dolly(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    instruction = _text(data, "instruction", issues)
    user = _joined(instruction, _text(data, "context", issues, optional=True))
    return _pair(user, _text(data, "response", issues))


def _text_record(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    return {"kind": "text", "text": _text(data, "text", issues)}


@dataclass(frozen=True)
class _ChatSchema:
    """Where a chat list lives and how its turns spell role and content."""

    key: str
    role_key: str
    content_key: str
    roles: Mapping[str, str]  # accepted spelling -> normalized role
    calls: bool = False  # OpenAI's tool_calls / tool_call_id are read (the messages format)


_MESSAGES = _ChatSchema("messages", "role", "content", _MESSAGE_ROLES, calls=True)
_SHAREGPT = _ChatSchema("conversations", "from", "value", _SHAREGPT_ROLES)
_PROMPT = _ChatSchema("prompt", "role", "content", _MESSAGE_ROLES)


def _messages(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    return {"kind": "chat", "messages": _chat(data, _MESSAGES, "assistant", issues), "tools": _tools(data, issues)}


def _sharegpt(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    return {"kind": "chat", "messages": _chat(data, _SHAREGPT, "assistant", issues)}


def _chat(data: Mapping[str, Any], schema: _ChatSchema, last: str, issues: _Issues) -> tuple[Message, ...]:
    if schema.key not in data:
        return ()
    before = len(issues)
    messages = _turns(data[schema.key], schema, issues)
    if messages is None:
        return ()
    if schema.calls and len(issues) == before:  # calls that failed their own checks answer nothing here
        _check_answers(messages, schema, issues)
    _check_order(messages, schema, last, issues)
    return messages


def _preference(data: Mapping[str, Any], issues: _Issues) -> dict[str, Any]:
    prompt = data.get("prompt")
    messages: tuple[Message, ...] = ()
    if isinstance(prompt, list):
        messages = _chat(data, _PROMPT, "user", issues)
    elif isinstance(prompt, str) or prompt is None:
        messages = (Message("user", _text(data, "prompt", issues)),)
    else:
        issues.append(("prompt", f"expected a string or a list of messages, got {_type_name(prompt)}"))
    chosen, rejected = _text(data, "chosen", issues), _text(data, "rejected", issues)
    if chosen.strip() and chosen == rejected:
        issues.append(("rejected", "is the same as 'chosen'; a preference pair needs two different answers"))
    return {"kind": "preference", "messages": messages, "chosen": chosen, "rejected": rejected}


def _turns(items: Any, schema: _ChatSchema, issues: _Issues) -> tuple[Message, ...] | None:
    """The messages of a chat list, or None if some turn has no usable role (then order is not checked)."""
    if not isinstance(items, list):
        issues.append((schema.key, f"expected a list of messages, got {_type_name(items)}"))
        return None
    if not items:
        issues.append((schema.key, "is empty"))
        return None
    needs = f"each message needs '{schema.role_key}' and '{schema.content_key}'"
    messages: list[Message] = []
    for i, item in enumerate(items):
        where = f"{schema.key}[{i}]"
        if not isinstance(item, dict):
            issues.append((where, f"expected an object, got {_type_name(item)}; {needs}"))
            continue
        role = _role(item, f"{where}.{schema.role_key}", schema, issues)
        calls = _tool_calls(item, role, where, issues) if schema.calls else ()
        content = ""
        if _calls_tools(item, role, schema) and item.get(schema.content_key) in (None, ""):  # calls alone
            pass
        elif schema.content_key not in item:
            issues.append((f"{where}.{schema.content_key}", f"missing; {needs}"))
        else:
            content = _string(item[schema.content_key], f"{where}.{schema.content_key}", issues)
        call_id = _tool_call_id(item, role, where, issues) if schema.calls else None
        if role is not None:
            messages.append(Message(role, content, calls, call_id))
    return tuple(messages) if len(messages) == len(items) else None


def _calls_tools(item: Mapping[str, Any], role: str | None, schema: _ChatSchema) -> bool:
    """Whether an assistant message makes calls (then its content may be null, as OpenAI's API allows)."""
    calls = item.get("tool_calls")
    return schema.calls and role == "assistant" and isinstance(calls, list) and bool(calls)


_CALL_SHAPE = 'each call is {"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}'


def _tool_calls(item: Mapping[str, Any], role: str | None, where: str, issues: _Issues) -> tuple[ToolCall, ...]:
    """An assistant message's calls (null or [] is none), each checked as OpenAI's API checks it."""
    items = item.get("tool_calls")
    if items is None or items == []:
        return ()
    path = f"{where}.tool_calls"
    if role != "assistant":
        if role is not None:
            issues.append((path, f"only an assistant message may make tool calls, not a '{role}' message"))
        return ()
    if not isinstance(items, list):
        issues.append((path, f"expected a list of calls, got {_type_name(items)}; {_CALL_SHAPE}"))
        return ()
    calls = [_tool_call(call, f"{path}[{i}]", issues) for i, call in enumerate(items)]
    return tuple(c for c in calls if c is not None)


def _tool_call(call: Any, path: str, issues: _Issues) -> ToolCall | None:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        got = _type_name(call) if not isinstance(call, dict) else "no 'function' object"
        issues.append((path, f"expected a call, got {got}; {_CALL_SHAPE}"))
        return None
    ok = True
    if call.get("type", "function") != "function":
        issues.append((f"{path}.type", f"unknown call type {call['type']!r}; allowed: function"))
        ok = False
    if call.get("id") is not None and not isinstance(call["id"], str):
        issues.append((f"{path}.id", f"expected a string, got {_type_name(call['id'])}"))
        ok = False
    function = call["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        issues.append((f"{path}.function.name", "missing" if name is None else
                       f"expected the function's name, got {_type_name(name) if name != '' else 'an empty string'}"))
        ok = False
    arguments = _arguments(function.get("arguments"), f"{path}.function.arguments", issues)
    if not ok or arguments is None:
        return None
    return ToolCall(name=name, arguments=arguments, id=call.get("id"))


def _arguments(value: Any, path: str, issues: _Issues) -> str | None:
    """A call's arguments as canonical JSON text: given as JSON text (OpenAI's) or as an object."""
    allowed = "expected a JSON object, as text (OpenAI's) or as an object"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            issues.append((path, f"is not valid JSON ({exc}); {allowed}"))
            return None
    if not isinstance(value, dict):
        issues.append((path, f"{'missing' if value is None else 'got ' + _type_name(value)}; {allowed}"))
        return None
    return json.dumps(value, ensure_ascii=False)


def _tool_call_id(item: Mapping[str, Any], role: str | None, where: str, issues: _Issues) -> str | None:
    """A tool message's `tool_call_id`: required, as OpenAI's API requires it."""
    if role != "tool":
        return None
    value = item.get("tool_call_id")
    if not isinstance(value, str) or not value:
        got = "missing" if value is None else f"expected a string, got {_type_name(value)}"
        issues.append((f"{where}.tool_call_id", f"{got}; a tool message names the call it answers (the id of one "
                       "of the tool_calls of the assistant message before it)"))
        return None
    if item.get("name") is not None and not isinstance(item["name"], str):
        issues.append((f"{where}.name", f"expected a string, got {_type_name(item['name'])}"))
    return value


def _check_answers(messages: Sequence[Message], schema: _ChatSchema, issues: _Issues) -> None:
    """Each tool message answers a call of the assistant message before it (by id, where the calls have ids)."""
    calls: tuple[ToolCall, ...] = ()
    for i, message in enumerate(messages):
        if message.role == "assistant":
            calls = message.tool_calls
        elif message.role == "tool" and message.tool_call_id is not None:
            path = f"{schema.key}[{i}].tool_call_id"
            ids = [c.id for c in calls if c.id is not None]
            if not calls:
                issues.append((path, "answers no call: the assistant message before it has no tool_calls"))
            elif ids and message.tool_call_id not in ids:
                issues.append((path, f"{message.tool_call_id!r} is not the id of a call of the assistant message "
                                     f"before it; its calls: {', '.join(ids)}"))


def _tools(data: Mapping[str, Any], issues: _Issues) -> tuple[str, ...]:
    """The record's `tools` (OpenAI function specs) as JSON text each; null or [] is none."""
    tools = data.get("tools")
    if tools is None or tools == []:
        return ()
    shape = 'each tool is {"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}'
    if not isinstance(tools, list):
        issues.append(("tools", f"expected a list of tools, got {_type_name(tools)}; {shape}"))
        return ()
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            issues.append((f"tools[{i}]", f"expected a function tool; {shape}"))
        elif not isinstance(function.get("name"), str) or not function["name"].strip():
            issues.append((f"tools[{i}].function.name", "missing; every tool has a name"))
        elif function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            issues.append((f"tools[{i}].function.parameters",
                           f"expected a JSON schema object, got {_type_name(function['parameters'])}"))
        else:
            out.append(json.dumps(tool, ensure_ascii=False))
    return tuple(out)


def _role(item: Mapping[str, Any], path: str, schema: _ChatSchema, issues: _Issues) -> str | None:
    allowed = ", ".join(schema.roles)
    if schema.role_key not in item:
        issues.append((path, f"missing; allowed roles: {allowed}"))
        return None
    value = item[schema.role_key]
    if not isinstance(value, str):
        issues.append((path, f"expected a string, got {_type_name(value)}"))
        return None
    if value not in schema.roles:
        issues.append((path, f"unknown role '{value}'; allowed: {allowed}"))
        return None
    return schema.roles[value]


def _check_order(messages: Sequence[Message], schema: _ChatSchema, last: str, issues: _Issues) -> None:
    """Turns alternate user/assistant (tool results after an assistant), and the chat ends with `last`."""
    previous: str | None = None  # the last non-system role
    for i, message in enumerate(messages):
        path = f"{schema.key}[{i}].{schema.role_key}"
        if message.role == "system":
            if i != 0:
                issues.append((path, "a system message is allowed only as the first message"))
            continue
        if message.role not in _NEXT[previous]:
            issues.append((path, _order_message(previous, message.role)))
        previous = message.role
    if last not in (m.role for m in messages):
        issues.append((schema.key, f"has no {last} message"))
    elif messages[-1].role != last:
        path = f"{schema.key}[{len(messages) - 1}].{schema.role_key}"
        issues.append((path, f"last message must be from the {last}"))


def _order_message(previous: str | None, role: str) -> str:
    if previous is None:
        return f"the first message (after an optional system message) must be from the user, got '{role}'"
    return (
        f"a '{role}' message cannot follow a '{previous}' message; turns alternate user/assistant, "
        "and tool messages follow an assistant message"
    )


_BUILDERS = {
    "input_output": _input_output,
    "alpaca": _alpaca,
    "dolly": _dolly,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "text": _text_record,
    "preference": _preference,
}
