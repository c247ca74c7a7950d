"""Render examples through the chat template and label exactly the tokens the model should learn.

Chat: the conversation is rendered once and tokenized whole, exactly as serve tokenizes a rendered prompt (and
as the model saw its own chats in training): cutting the text at the turns and encoding the pieces apart would
give SentencePiece tokenizers (Llama 2, Mistral, Phi-3) a `▁` at the head of every piece. The character span of
every assistant turn is found by rendering prefixes: it runs from the end of the generation prompt (the text
serve feeds) through the turn's end-of-turn token, i.e. everything the model writes for that turn, including
template text between the prompt and the content (Mistral v0.3's and Llama 2's space before the answer).
A token is trained when its characters (the fast tokenizer's offsets) meet a span: a token that straddles a
span's edge, such as SentencePiece's `▁ok` over that space and the answer's first letters, or a byte-level
token joining the prompt's last newline to an answer's leading whitespace, is one the model must generate.
At a turn's end the end-of-turn token is trained and what follows it (the newline after `<|im_end|>`, Phi-3's
closing eos) is not: those are separate tokens. Where a template ends a turn with plain text instead, a token
running past the answer's last character is trained with it, for the same reason.
A tool-calling chat renders with the record's `tools` (the template's own `tools`, as serve passes them) and its
calls in the messages (`llmforge.models.chat.template_turn`, shared with serve). An assistant turn that calls tools
is trained the same way: from the generation prompt through its end-of-turn token, so the rendered calls (Qwen2.5's
`<tool_call>` blocks, Llama 3.1's JSON) and any content the template writes beside them; tool results are the
prompt of the next turn and never trained. A template that ignores the record's tools or calls is refused for
that record (`RecordError`, naming the field), never trained on calls to tools the model was never shown.
Labels are aligned with `input_ids` (the model shifts them), so there is no off-by-one to get wrong here.
Text: every token is trainable, and eos closes the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmforge.errors import LlmforgeError
from llmforge.models.chat import ensure_chat_template, template_ids

IGNORE = -100
TOOL_TEMPLATES = ("a template that renders OpenAI tools and tool_calls: Qwen2.5's, Llama 3.1's, Hermes', or "
                  "data.chat_template set to such a Jinja file")


class RecordError(LlmforgeError):
    """One record the chat template cannot show as it is; `field` names the part of the record."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rendered:
    """A sample as text plus the character spans whose tokens are trainable."""

    text: str
    spans: tuple[tuple[int, int], ...]
    add_special_tokens: bool = False


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


class ChatRenderer:
    """Renders conversations through the tokenizer's chat template.

    Calls the compiled Jinja template directly (about 2.5x less overhead per call than `apply_chat_template`,
    which matters at one render per turn per record), after checking on the first conversation of each kind
    that both give the same text; on any difference it uses `apply_chat_template` from then on.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.checked: set[tuple[bool, bool, bool]] = set()
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            self.template: Any = _compile_jinja_template(tokenizer.chat_template)
        except Exception:  # a private helper of transformers: if it moved, use the public path
            self.template = None

    def _slow(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
              tools: list[dict[str, Any]] | None) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                  **({"tools": tools} if tools else {}))  # as serve's chat_ids

    def __call__(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
                 tools: list[dict[str, Any]] | None = None) -> str:
        messages, tools = list(messages), tools or None
        if self.template is None:
            return self._slow(messages, add_generation_prompt, tools)
        fast = self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    tools=tools, documents=None, **self.tokenizer.special_tokens_map)
        kind = (add_generation_prompt, tools is not None, any("tool_calls" in m for m in messages))
        if kind not in self.checked:
            if fast != self._slow(messages, add_generation_prompt, tools):
                self.template = None
                return self._slow(messages, add_generation_prompt, tools)
            self.checked.add(kind)
        return fast


def _turn_end(full: str, content_end: int, turn_end: int, eos: str | None) -> int:
    """End of the trainable part of a turn: through eos if the template writes it, else the trimmed turn."""
    tail = full[content_end:turn_end]
    if eos and eos in tail:
        return content_end + tail.index(eos) + len(eos)
    return content_end + len(tail.rstrip())


def _closer(full: str, messages: Sequence[dict[str, Any]], render: ChatRenderer, eos: str | None,
            tools: list[dict[str, Any]] | None = None) -> str:
    """What a template writes after the last turn when no generation prompt follows, e.g. Phi-3's eos: a rendered
    prefix ends with it where the whole conversation goes on. It closes the conversation; it is no turn's end."""
    if not eos or not full.endswith(eos) or len(messages) < 2:
        return ""
    head = render(messages[:-1], tools=tools)
    if head.endswith(eos) and not full.startswith(head) and full.startswith(head[: -len(eos)]):
        return eos
    return ""


def render_chat(
    tokenizer: Any, messages: Sequence[dict[str, Any]], train_on_inputs: bool = False,
    render: ChatRenderer | None = None, tools: list[dict[str, Any]] | None = None,
) -> Rendered:
    """`messages` as `llmforge.models.chat.template_turn` gives them; `tools`: the record's OpenAI function specs."""
    if not getattr(tokenizer, "chat_template", None):
        ensure_chat_template(tokenizer)  # raises, naming data.chat_template
    _render = render or ChatRenderer(tokenizer)
    messages = template_ids(list(messages), tokenizer.chat_template)  # as serve renders them
    full = _render(messages, tools=tools)
    if tools and full == _render(messages):
        raise RecordError("tools", "the chat template does not render tools (the text is the same without them), so "
                          f"the model would learn to call tools it is never shown; use {TOOL_TEMPLATES}, or drop "
                          "the record's tools")
    if train_on_inputs:
        _check_calls(messages, full, range(len(messages)))
        return Rendered(full, ((0, len(full)),))
    closer = _closer(full, messages, _render, tokenizer.eos_token, tools)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(messages[:i], add_generation_prompt=True, tools=tools)
        through = full if i == len(messages) - 1 else _render(messages[: i + 1], tools=tools)
        if closer and through.endswith(closer):
            through = through[: -len(closer)]
        if not (full.startswith(prefix) and full.startswith(through)):
            raise LlmforgeError(
                "the chat template renders a conversation differently from its prefixes, so assistant turns "
                "cannot be located; set data.chat_template to a standard one (e.g. 'chatml')"
            )
        start = full.find(message["content"], len(prefix))
        if start < 0 or start >= len(through):
            if not message.get("tool_calls"):
                raise LlmforgeError("the chat template alters assistant content; cannot label it exactly")
            content_end = len(prefix)  # a template may write calls alone (Llama 3.1's): the turn is the calls
        else:
            content_end = start + len(message["content"])
        # from where serve's prompt ends: what the template writes before the content is the model's to write
        spans.append((len(prefix), _turn_end(full, content_end, len(through), tokenizer.eos_token)))
        _check_calls(messages, full[spans[-1][0]:spans[-1][1]], [i])
    return Rendered(full, tuple(spans))


def _check_calls(messages: Sequence[dict[str, Any]], text: str, turns: Sequence[int]) -> None:
    """Every call of the assistant turns `turns` is in `text` (its trained span): a template without tool support
    (plain ChatML, Llama 3.0's) writes the content alone and would drop the calls silently."""
    for i in turns:
        for call in messages[i].get("tool_calls") or ():
            name = call["function"]["name"]
            if name not in text:
                raise RecordError("messages", f"the chat template does not render tool calls (the assistant's call to "
                                  f"{name!r} is not in its turn); use {TOOL_TEMPLATES}")


def render_text(text: str) -> Rendered:
    return Rendered(text, ((0, len(text)),), add_special_tokens=True)


def _token_at(encoding: Any, chars: range) -> int | None:
    """The first token holding the first of `chars` that is in a token (a normalizer may drop characters)."""
    for c in chars:
        token = encoding.char_to_token(c)
        if token is not None:
            return token
    return None


def _labels(ids: list[int], encoding: Any, r: Rendered) -> list[int]:
    """`ids` where a token holds a character of a span, else IGNORE.

    Offsets only grow along the text, so those tokens are one run per span: from the token holding its first
    character through the last token holding its last one (a character may take several byte-fallback tokens).
    Found from the span's ends alone, so labelling costs a few lookups per turn, not a pass over the tokens."""
    if r.spans == ((0, len(r.text)),):  # train_on_inputs
        return list(ids)
    labels = [IGNORE] * len(ids)
    for start, end in r.spans:
        lo = _token_at(encoding, range(start, end))
        if lo is None:
            continue
        hi = _token_at(encoding, range(end - 1, start - 1, -1)) + 1
        while hi < len(ids) and (chars := encoding.token_to_chars(hi)) is not None and chars[0] < end:
            hi += 1
        labels[lo:hi] = ids[lo:hi]
    return labels


def _encode(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> tuple[list[list[int]], list[Any]]:
    """Ids and the fast tokenizer's encodings (None for a slow one) of `texts`, by the call serve makes."""
    if not texts:
        return [], []
    enc = tokenizer(texts, add_special_tokens=add_special_tokens, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)  # an over-long sample is fit_length's to report
    return enc["input_ids"], enc.encodings or [None] * len(texts)


def tokenize_batch(tokenizer: Any, batch: Sequence[Rendered]) -> list[Tokenized]:
    """Tokenize rendered samples in one tokenizer call per kind, the calls serve makes for a prompt.

    A chat is tokenized whole, without special tokens (the template writes bos itself); its labels are the
    tokens that hold characters of its spans (see the module doc). Text samples get the tokenizer's special
    tokens and eos, and are trained whole.
    """
    chats = [r for r in batch if not r.add_special_tokens]
    if chats and not getattr(tokenizer, "is_fast", False):
        raise LlmforgeError("preparing chats needs a fast tokenizer (a tokenizer.json): assistant turns are "
                            "labelled by the character offsets only it gives")
    chat_ids, encodings = _encode(tokenizer, [r.text for r in chats], add_special_tokens=False)
    chat = iter(Tokenized(ids, _labels(ids, e, r)) for r, ids, e in zip(chats, chat_ids, encodings))
    text_ids, _ = _encode(tokenizer, [r.text for r in batch if r.add_special_tokens], add_special_tokens=True)
    text = iter(ids + [tokenizer.eos_token_id] for ids in text_ids)
    out = []
    for r in batch:
        if r.add_special_tokens:
            ids = next(text)
            out.append(Tokenized(ids, list(ids)))
        else:
            out.append(next(chat))
    return out


def fit_length(sample: Tokenized, max_length: int, policy: str) -> list[Tokenized]:
    """Apply the over-length policy. Returns [] to drop; 'error' is handled by the caller's report."""
    if len(sample.input_ids) <= max_length:
        return [sample]
    if policy == "truncate":
        return [Tokenized(sample.input_ids[:max_length], sample.labels[:max_length])]
    if policy == "chunk":
        return [
            Tokenized(sample.input_ids[i : i + max_length], sample.labels[i : i + max_length])
            for i in range(0, len(sample.input_ids), max_length)
            if len(sample.input_ids[i : i + max_length]) > 1
        ]
    return []
