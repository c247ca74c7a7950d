"""Structured output by constrained decoding: JSON object, JSON schema, regex and choice, on CPU with llguidance.

OpenAI's `response_format` (`{"type": "json_object"}`, `{"type": "json_schema", "json_schema": {"schema": ...}}`)
and vLLM's `guided_json` / `guided_regex` / `guided_choice` become one llguidance grammar (`compile_grammar`).
Every sequence that asks for one gets its own matcher (`Grammar.matcher()`): before each token is picked, the
logits of every token that would leave the grammar are set to -inf (after penalties and bias, before
temperature, top-p and the rest, as vLLM orders it), and the picked token advances the matcher. End of sequence is
allowed only where the grammar may end; once it can go no further the sequence stops (`finish_reason: stop`).
A sequence cut by `max_tokens` ends where it was cut (`finish_reason: length`), as in vLLM and OpenAI.
`tool_choice: required` or a named function constrains the reply to one call, in the model's tool format, whose
arguments follow the function's `parameters` schema (`compile_tool_grammar`).

Whitespace between JSON tokens is bounded (`JSON_DEFAULTS`). llguidance was chosen over xgrammar and
outlines-core (all three install here): it needs no torch of its own, builds its token trie once per tokenizer
(0.4 s for SmolLM2's 49,152 tokens) and computes a mask in microseconds (`benchmarks/structured.py`).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import torch

from llmforge.errors import LlmforgeError

# Between JSON tokens: up to 16 spaces, tabs or newlines. A model writes JSON in its own style (compact, spaced as
# `json.dumps` does, indented), but cannot pad it forever: with free whitespace a model may emit newlines without end
# and never leave the grammar.
JSON_DEFAULTS = {"whitespace_flexible": True, "whitespace_pattern": "[\n\t ]{0,16}"}


class GrammarError(LlmforgeError):
    """The schema, regex or choices cannot be compiled; the message says why (the API answers 400)."""


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise GrammarError("structured output needs llguidance: pip install 'llmforge[serve]'") from exc
    return llguidance


_TOKENIZERS: dict[int, tuple[Any, Any]] = {}  # id(hf tokenizer) -> (the tokenizer, kept alive; its LLTokenizer)
_LOCK = threading.Lock()


def ll_tokenizer(tokenizer: Any, eos_token_ids: frozenset[int]) -> Any:
    """llguidance's view of `tokenizer` (its token trie), built once per tokenizer object."""
    key = id(tokenizer)
    with _LOCK:
        if key not in _TOKENIZERS:
            ll = _llguidance()
            _TOKENIZERS[key] = (tokenizer, ll.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer),
                                                                  eos_token=sorted(eos_token_ids) or None))
        return _TOKENIZERS[key][1]


@dataclass(frozen=True)
class Grammar:
    """A compiled grammar for one tokenizer; `matcher()` makes one sequence's state."""

    spec: str  # llguidance's grammar JSON
    kind: str  # json_object | json_schema | regex | choice (for messages)
    tokenizer: Any  # llguidance.LLTokenizer

    def matcher(self) -> Matcher:
        return Matcher(self)


class Matcher:
    """One sequence's place in its grammar: which tokens may come next, and the advance after each."""

    def __init__(self, grammar: Grammar) -> None:
        ll = _llguidance()
        self.grammar = grammar
        self._matcher = ll.LLMatcher(grammar.tokenizer, grammar.spec)
        self._mask = ll.torch.allocate_token_bitmask(1, grammar.tokenizer.vocab_size)
        self._fill, self._apply = ll.torch.fill_next_token_bitmask, ll.torch.apply_token_bitmask_inplace

    @property
    def done(self) -> bool:
        """Nothing but the end may follow: the sequence is complete."""
        return bool(self._matcher.is_stopped())

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` (V,) with every token the grammar does not allow next at -inf (a new tensor)."""
        self._fill(self._matcher, self._mask, 0)
        out = scores.clone().unsqueeze(0)  # (1, V)
        self._apply(out, self._mask)
        if not bool(torch.isfinite(out.max())):
            raise GrammarError(f"the {self.grammar.kind} grammar allows no token here: "
                               f"{self._matcher.get_error() or 'a dead end'}")
        return out[0]

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GrammarError(f"token {token} breaks the {self.grammar.kind} grammar: {self._matcher.get_error()}")


def _schema(value: Any, field: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise GrammarError(f"{field}: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise GrammarError(f"{field}: a JSON schema must be an object")
    return value


def grammar_spec(*args: Any, **kwargs: Any) -> tuple[str, str] | None:
    try:
        return _grammar_spec(*args, **kwargs)
    except GrammarError:
        raise
    except Exception as exc:  # llguidance refuses a construct (a regex feature it lacks, ...): the caller's to fix
        raise GrammarError(f"the grammar cannot be compiled: {exc}") from None


def _grammar_spec(response_format: dict[str, Any] | None = None, guided_json: Any = None,
                 guided_regex: str | None = None, guided_choice: list[str] | None = None) -> tuple[str, str] | None:
    """(llguidance grammar, kind) for what a request asks for; None when it asks for free text."""
    ll = _llguidance().LLMatcher
    asked = [name for name, v in (("response_format", response_format), ("guided_json", guided_json),
                                  ("guided_regex", guided_regex), ("guided_choice", guided_choice))
             if v is not None and not (name == "response_format" and v.get("type") == "text")]
    if len(asked) > 1:
        raise GrammarError(f"ask for one kind of structured output at a time; got {', '.join(asked)}")
    if not asked:
        return None
    if response_format is not None and asked == ["response_format"]:
        kind = response_format.get("type")
        if kind == "json_object":
            return ll.grammar_from_json_schema({"type": "object"}, defaults=JSON_DEFAULTS), "json_object"
        spec = response_format.get("json_schema") or {}
        schema = _schema(spec.get("schema", {"type": "object"}), "response_format.json_schema.schema")
        return ll.grammar_from_json_schema(schema, defaults=JSON_DEFAULTS), "json_schema"
    if guided_json is not None:
        return ll.grammar_from_json_schema(_schema(guided_json, "guided_json"), defaults=JSON_DEFAULTS), "json_schema"
    if guided_regex is not None:
        try:
            re.compile(guided_regex)
        except re.error as exc:
            raise GrammarError(f"guided_regex: not a valid regular expression ({exc})") from None
        return ll.grammar_from_regex(guided_regex), "regex"
    if not guided_choice:
        raise GrammarError("guided_choice: give at least one choice")
    return ll.grammar_from_regex("|".join(f"(?:{_escape(c)})" for c in guided_choice)), "choice"


def tool_call_spec(functions: list[tuple[str, dict[str, Any] | None]], fmt: str) -> tuple[str, str]:
    """A reply that is exactly one call of one of `functions` ((name, parameters schema)), written in the model's
    tool format (`llmforge.serve.tools`): what `tool_choice: required` or a named function constrains decoding to."""
    key = "parameters" if fmt == "llama3_json" else "arguments"
    options = [{"type": "object", "additionalProperties": False, "required": ["name", key],
                "properties": {"name": {"const": name}, key: _closed(params or {"type": "object"})}}
               for name, params in functions]
    schema = {**(options[0] if len(options) == 1 else {"anyOf": options}), "x-guidance": JSON_DEFAULTS}
    body = f"%json{json.dumps(schema)}"
    # Llama 3's `<|python_tag|>` and Mistral's `[TOOL_CALLS]` are special tokens the parser takes as optional:
    # the grammar writes the JSON alone (a one-call list for Mistral, whose template writes its calls as a list).
    lark = {"hermes": f'start: "<tool_call>\\n" {body} "\\n</tool_call>"',
            "mistral": f'start: "[" {body} "]"'}.get(fmt, f"start: {body}")
    try:
        return _llguidance().LLMatcher.grammar_from_lark(lark), "tool_call"
    except Exception as exc:
        raise GrammarError(f"the tools' parameters cannot be compiled: {exc}") from None


def _closed(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters that do not say `additionalProperties` take none, as OpenAI's strict function calling has it: a
    constrained model must not invent arguments (it could otherwise add keys without end)."""
    if params.get("type") == "object" and "additionalProperties" not in params:
        return {**params, "additionalProperties": False}
    return params


def compile_tool_grammar(tokenizer: Any, eos_token_ids: frozenset[int], functions: list[tuple[str, Any]],
                         fmt: str) -> Grammar:
    spec, kind = tool_call_spec(functions, fmt)
    ll_tok = ll_tokenizer(tokenizer, eos_token_ids)
    ok, message = _validate(spec, ll_tok)
    if not ok:
        raise GrammarError(f"the tools' parameters cannot be compiled: {message}")
    return Grammar(spec, kind, ll_tok)


def _escape(text: str) -> str:
    """A literal for llguidance's regex dialect (Rust's regex syntax: escape every metacharacter)."""
    return "".join(f"\\{c}" if c in r"\.+*?()|[]{}^$#&-~" else c for c in text)


def compile_grammar(tokenizer: Any, eos_token_ids: frozenset[int], **asked: Any) -> Grammar | None:
    """The grammar a request asks for, checked against the model's tokenizer; GrammarError when it is invalid."""
    found = grammar_spec(**asked)
    if found is None:
        return None
    spec, kind = found
    ll_tok = ll_tokenizer(tokenizer, eos_token_ids)
    ok, message = _validate(spec, ll_tok)
    if not ok:
        raise GrammarError(f"the {kind} cannot be compiled: {message}")
    return Grammar(spec, kind, ll_tok)


def _validate(spec: str, tokenizer: Any) -> tuple[bool, str]:
    ll = _llguidance()
    error = ll.LLMatcher.validate_grammar(spec, tokenizer)
    return (not error, error or "")
