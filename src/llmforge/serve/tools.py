"""Tool calls in a model's output: the formats models are trained to write, parsed into OpenAI `tool_calls`.

Three formats, as vLLM's `hermes`, `llama3_json` and `mistral` parsers read them:

- **hermes** (Hermes 2 Pro, Qwen2/2.5, most ChatML tool models): `<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>` blocks, any number of them, anywhere in the reply; the text outside the blocks is the content.
- **llama3_json** (Llama 3.1+): the whole reply is `{"name": ..., "parameters": {...}}` (or `arguments`),
  optionally after `<|python_tag|>`; several calls separated by `;` or given as a JSON list.
- **mistral** (Mistral 7B Instruct v0.3 and its template's descendants): the whole reply is `[TOOL_CALLS]` (a
  special token, so often decoded away) and a JSON list of `{"name": ..., "arguments": {...}}`. Mistral's
  templates accept only 9-character alphanumeric call ids, so its calls get such ids (as vLLM gives them), and
  ids a client sends back in another shape are mapped for the template (`llmforge.models.chat.template_ids`).

The format is the model's: its family where that settles it (Qwen2 -> hermes, Mistral -> mistral), else its chat
template's text (`<tool_call>` -> hermes, `[TOOL_CALLS]` -> mistral, Llama 3's header tokens or `<|python_tag|>` ->
llama3_json), else hermes.

Parsing is incremental and the non-streamed answer is the streamed one fed at once, so both give the same
calls and content. A call is released once it is complete (its `</tool_call>`, or the end of a Llama 3 reply),
never half-parsed: a block whose JSON does not parse is kept as content, text and tags, never a 500.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmforge.models.chat import template_turn
from llmforge.models.families import family_of
from llmforge.serve import schemas as s

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_TAG = "[TOOL_CALLS]"
_ALNUM = string.ascii_letters + string.digits


def openai_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def mistral_id() -> str:
    """9 alphanumeric characters: the only call id Mistral's chat templates accept."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (what OpenAI sends)
    id: str = field(default_factory=openai_id)


@dataclass
class Parsed:
    """What one piece of output became: content text to release and complete calls."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)


class ToolParser(Protocol):
    def feed(self, text: str) -> Parsed: ...

    def finish(self) -> Parsed: ...


def parse_all(parser: ToolParser, text: str) -> tuple[str | None, list[ToolCall]]:
    """A whole reply: (content, or None when there is none beside calls; the calls)."""
    first, last = parser.feed(text), parser.finish()
    content, calls = first.content + last.content, first.calls + last.calls
    return (content or None) if calls else content, calls


def _call(obj: Any, new_id: Callable[[], str] = openai_id) -> ToolCall | None:
    """One decoded call object, or None when it is not one: a string `name` and object arguments."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as JSON text already
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False), id=new_id())


def _json_call(text: str) -> ToolCall | None:
    try:
        return _call(json.loads(text))
    except ValueError:
        return None


def _prefix_overlap(text: str, marker: str) -> int:
    """How many trailing characters of `text` could be the start of `marker` (held back until they can't)."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


class HermesParser:
    """`<tool_call>{json}</tool_call>` blocks. The content is the text outside the blocks, stripped at both ends;
    whitespace between content and a call is held until more content shows it is inside the content."""

    def __init__(self) -> None:
        self.buf = ""
        self.inside = False
        self.pending = ""  # content not yet released: trailing whitespace, maybe the content's end
        self.started = False  # content released already (so leading whitespace is no longer stripped)

    def _content(self, text: str) -> str:
        self.pending += text
        if not self.pending.strip():
            return ""
        out = self.pending.rstrip()
        self.pending = self.pending[len(out):]
        if not self.started:
            out, self.started = out.lstrip(), True
        return out

    def feed(self, text: str) -> Parsed:
        self.buf += text
        out = Parsed()
        while True:
            if not self.inside:
                at = self.buf.find(HERMES_START)
                if at < 0:
                    keep = _prefix_overlap(self.buf, HERMES_START)
                    out.content += self._content(self.buf[:len(self.buf) - keep])
                    self.buf = self.buf[len(self.buf) - keep:]
                    return out
                out.content += self._content(self.buf[:at])
                self.buf, self.inside = self.buf[at + len(HERMES_START):], True
            at = self.buf.find(HERMES_END)
            if at < 0:
                return out
            body, self.buf, self.inside = self.buf[:at], self.buf[at + len(HERMES_END):], False
            self._block(body, HERMES_END, out)

    def _block(self, body: str, end: str, out: Parsed) -> None:
        call = _json_call(body.strip())
        if call is None:  # not a call after all: the model's text, as it wrote it
            out.content += self._content(HERMES_START + body + end)
        else:
            out.calls.append(call)

    def finish(self) -> Parsed:
        out = Parsed()
        if self.inside:  # an unclosed last block (the model stopped before </tool_call>): a call if it parses
            self._block(self.buf, "", out)
        else:
            out.content += self._content(self.buf)
        self.buf, self.pending = "", ""  # trailing whitespace is not content
        return out


class Llama3JsonParser:
    """A reply that is entirely JSON call(s), after an optional `tag`, is calls; any other reply is content,
    released as it comes. Llama 3's tag is `<|python_tag|>`; Mistral's is `[TOOL_CALLS]`, with its own ids."""

    def __init__(self, tag: str = PYTHON_TAG, new_id: Callable[[], str] = openai_id) -> None:
        self.buf = ""
        self.mode: str | None = None  # None: undecided, "content" or "json"
        self.tag, self.new_id = tag, new_id

    def feed(self, text: str) -> Parsed:
        self.buf += text
        if self.mode is None:
            head = self.buf.lstrip()
            if not head or (len(head) < len(self.tag) and self.tag.startswith(head)):  # may become the tag
                return Parsed()
            self.mode = "json" if head.startswith((self.tag, "{", "[")) else "content"
        if self.mode == "json":
            return Parsed()  # decided at the end: all calls, or all content
        text, self.buf = self.buf, ""
        return Parsed(content=text)

    def finish(self) -> Parsed:
        text, self.buf = self.buf, ""
        if self.mode == "content" or not text.strip():
            return Parsed(content=text)
        calls = _json_calls(text.strip().removeprefix(self.tag).strip(), self.new_id)
        return Parsed(calls=calls) if calls else Parsed(content=text)


def _json_calls(text: str, new_id: Callable[[], str] = openai_id) -> list[ToolCall]:
    """`{...}`, `{...}; {...}` or `[{...}, ...]`, every item a call; [] when any part is not."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    try:
        while at < len(text):
            obj, at = decoder.raw_decode(text, at)
            objects.extend(obj if isinstance(obj, list) else [obj])
            while at < len(text) and (text[at].isspace() or text[at] == ";"):
                at += 1
    except ValueError:
        return []
    calls = [_call(o, new_id) for o in objects]
    return [c for c in calls if c is not None] if calls and all(calls) else []


PARSERS: dict[str, Callable[[], ToolParser]] = {
    "hermes": HermesParser, "llama3_json": Llama3JsonParser,
    "mistral": lambda: Llama3JsonParser(MISTRAL_TAG, mistral_id)}


def tool_format(chat_template: str | None, family: str | None = None) -> str:
    """The tool-call format a model writes: from its family where that settles it, else from its template."""
    template = chat_template or ""
    if family == "qwen2" or HERMES_START in template:
        return "hermes"
    if family == "mistral" or MISTRAL_TAG in template:
        return "mistral"
    if PYTHON_TAG in template or "<|start_header_id|>" in template:  # Llama 3.x (family "llama" holds SmolLM2 too)
        return "llama3_json"
    return "hermes"  # ChatML and unknown templates: the most widely trained format


def new_parser(fmt: str) -> ToolParser:
    return PARSERS[fmt]()


def model_tool_format(backend: Any) -> str:
    """The format of a served model: its family (a PyTorch backend knows its config), else its chat template."""
    family = family_of(getattr(getattr(backend, "model", None), "config", None) or {})
    return tool_format(getattr(backend.tokenizer, "chat_template", None), family.key if family else None)


# --- the request side: tools and earlier calls, as chat templates take them -----------------------------------------


def chat_turns(messages: list[s.ChatMessage]) -> list[dict[str, Any]]:
    """Messages as chat templates take them (`llmforge.models.chat.template_turn`, which prepare uses too): an
    assistant turn's `tool_calls` with their arguments as a mapping, a tool result with its `tool_call_id`."""
    return [template_turn(m.role, m.text(), [c.model_dump() for c in m.tool_calls] if m.tool_calls else None,
                          m.tool_call_id) for m in messages]


def template_tools(tools: list[s.Tool] | None) -> list[dict[str, Any]] | None:
    """A request's tools for the template (OpenAI's shape, which tool-use templates read), or None."""
    return [t.model_dump(exclude_none=True) for t in tools] if tools else None


def unknown_choice(body: s.ChatCompletionRequest) -> str | None:
    """A named tool_choice's name when no tool has it, else None."""
    choice = body.tool_choice
    if not isinstance(choice, s.NamedToolChoice):
        return None
    return None if choice.function.name in {t.function.name for t in body.tools or ()} else choice.function.name


def parses_calls(body: s.ChatCompletionRequest) -> bool:
    """Whether replies are parsed for calls: with tools, unless tool_choice is none."""
    return bool(body.tools) and body.tool_choice != "none"


# --- the response side ------------------------------------------------------------------------------------------------


def message(text: str, fmt: str | None, max_calls: int | None = None) -> tuple[s.AssistantMessage, bool]:
    """A whole reply as the assistant message, and whether it holds calls (`fmt` None: not parsed); `max_calls`:
    the first that many calls are kept (`parallel_tool_calls: false` keeps one)."""
    if fmt is None:
        return s.AssistantMessage(content=text), False
    content, calls = parse_all(new_parser(fmt), text)
    calls = calls[:max_calls]
    return s.AssistantMessage(content=content, tool_calls=[
        s.ToolCall(id=c.id, function=s.FunctionCall(name=c.name, arguments=c.arguments)) for c in calls] or None), \
        bool(calls)


class StreamedChoice:
    """One streamed choice's text through its parser (`fmt` None: passed through): the content to send and its
    calls as OpenAI streams them, each its id, type and name first (arguments empty), then its arguments.

    A call's arguments go in one delta once its block is complete, not token by token as OpenAI's do: a block is
    known to be a call only when its JSON parses, and one that does not is content (never a 500), which a half-sent
    call could no longer become. Clients concatenate argument deltas either way."""

    def __init__(self, fmt: str | None, max_calls: int | None = None) -> None:
        self.parser = new_parser(fmt) if fmt else None
        self.calls = 0  # streamed so far; a call's index
        self.max_calls = max_calls  # calls past it are dropped, as `message` drops them

    def step(self, text: str, last: bool) -> tuple[str, list[s.DeltaToolCall]]:
        if self.parser is None:
            return text, []
        out = self.parser.feed(text)
        if last:
            end = self.parser.finish()
            out = Parsed(out.content + end.content, out.calls + end.calls)
        if self.max_calls is not None:
            out.calls = out.calls[:max(self.max_calls - self.calls, 0)]
        deltas = []
        for i, c in enumerate(out.calls, start=self.calls):
            deltas.append(s.DeltaToolCall(index=i, id=c.id, type="function",
                                          function=s.DeltaFunction(name=c.name, arguments="")))
            deltas.append(s.DeltaToolCall(index=i, function=s.DeltaFunction(arguments=c.arguments)))
        self.calls += len(out.calls)
        return out.content, deltas
