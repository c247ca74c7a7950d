"""Chat templates, for tokenizers that come without one (or with one the user replaces).

The template decides what the model sees in training *and* in serving, so it is saved with every tokenizer
that llmforge writes: a model good in training and garbage after export usually differs here.

Named templates follow each family's published template. A template without a system role (Mistral, Gemma,
DialoGPT's eos-separated turns, whose named template refuses one) gets the system message folded into the first
user turn, as those model cards document (`with_system_folded`, used alike by prepare and serve); a conversation
the template refuses even then is refused, naming the record. A Jinja file may be given instead of
a name (`data.chat_template: path/to/template.jinja`, `--chat-template FILE` in prepare and serve).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from llmforge.errors import ConfigError

# ChatML, with the end-of-turn marker doubling as eos so generation stops after each assistant turn.
CHATML = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (  # Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# A system message that the family's template cannot hold is folded into the first user turn.
_FOLD_SYSTEM = (
    "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = none %}{% endif %}"
)
LLAMA2 = (  # Llama-2-chat: [INST] turns, the system prompt in <<SYS>> inside the first one
    _FOLD_SYSTEM + "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% set content = message['content'] %}{% if loop.first and system is not none %}"
    "{% set content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content %}{% endif %}"
    "{{ bos_token + '[INST] ' + content + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL = (  # Mistral-7B-Instruct: no system role; it is prepended to the first user message
    _FOLD_SYSTEM + "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% set content = message['content'] %}{% if loop.first and system is not none %}"
    "{% set content = system + '\n\n' + content %}{% endif %}{{ '[INST] ' + content + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
GEMMA = (  # Gemma 2/3: <start_of_turn>user|model; no system role, folded into the first user turn
    _FOLD_SYSTEM + "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% set content = message['content'] %}{% if loop.first and system is not none %}"
    "{% set content = system + '\n\n' + content %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
PHI3 = (  # Phi-3-mini-instruct: eos closes a conversation that no generation prompt follows
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
USER_ASSISTANT = (  # plain "User: ... / Assistant: ..." text, for base models without special tokens
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)
DIALOGPT = (  # DialoGPT: the turns of a conversation, each followed by eos; no roles
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('the dialogpt template has no system role (turns separated by eos); drop the system "
    "message or choose another data.chat_template') }}{% endif %}{{ message['content'] + eos_token }}{% endfor %}"
)

TEMPLATES = {"chatml": CHATML, "llama-3": LLAMA3, "llama-2": LLAMA2, "mistral": MISTRAL, "gemma": GEMMA,
             "phi-3": PHI3, "user-assistant": USER_ASSISTANT, "dialogpt": DIALOGPT}


T = TypeVar("T")


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leading system message joined to the head of the first user turn ("system\n\nuser"): what Gemma's
    and Mistral's model cards tell users of their templates, which have no system role, to do."""
    system, first, *rest = messages
    return [{**first, "content": f"{system['content']}\n\n{first['content']}"}, *rest]


def with_system_folded(render: Callable[[list[dict[str, Any]]], T], messages: list[dict[str, Any]]) -> tuple[T, bool]:
    """`render(messages)`; where the template refuses a conversation that opens with a system message followed by
    a user turn (Gemma 2's and Mistral v0.1's raise), render it with the system message folded instead.
    Returns (rendered, folded). Training and serving both go through here, so a model sees the same prompt in
    both. A refusal with the system message folded is raised as the original one."""
    try:
        return render(messages), False
    except Exception:
        if len(messages) < 2 or messages[0].get("role") != "system" or messages[1].get("role") != "user":
            raise
        try:
            return render(fold_system(messages)), True
        except Exception:
            pass
        raise


def call_arguments(arguments: Any) -> Any:
    """A call's arguments as tool-use templates take them (Qwen2.5's and Llama 3.1's `arguments | tojson`): a
    mapping; JSON text that is no object stays the text it was."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return arguments
    return value if isinstance(value, dict) else arguments


def template_turn(role: str, content: str, tool_calls: Sequence[Mapping[str, Any]] | None = None,
                  tool_call_id: str | None = None) -> dict[str, Any]:
    """One OpenAI chat message as chat templates take it, alike in prepare and serve so that a model is served the
    text it was trained on: an assistant turn's `tool_calls` (OpenAI's `{id, type, function: {name, arguments}}`)
    with their arguments as a mapping, as vLLM passes them; a tool result with its `tool_call_id`. The keys are
    there only when set (Llama 3.1's template tests `'tool_calls' in message`)."""
    turn: dict[str, Any] = {"role": role, "content": content}
    if tool_calls:
        turn["tool_calls"] = [
            {**({"id": c["id"]} if c.get("id") is not None else {}), "type": c.get("type") or "function",
             "function": {"name": c["function"]["name"], "arguments": call_arguments(c["function"]["arguments"])}}
            for c in tool_calls]
    if tool_call_id is not None:
        turn["tool_call_id"] = tool_call_id
    return turn


_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH_CHECK = "length != 9"  # Mistral's templates raise unless a call id is 9 characters (v0.3, Nemo)


def template_id(call_id: str) -> str:
    """A 9-character alphanumeric id for `call_id`: itself when it is one, else derived from it (a hash), so that
    a call and the result answering it map alike, and every rendering of a conversation is the same text."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode("utf-8")).digest()[:8], "big")
    return "".join(_ID_ALPHABET[(n // 62**i) % 62] for i in range(9))


def template_ids(messages: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """`messages` (as `template_turn` gives them) with their call ids as `template` accepts them: for a template
    that requires 9-character ids (Mistral's), each call's `id` and each result's `tool_call_id` through
    `template_id`; any other template gets them unchanged. OpenAI's ids (`call_` + 24 hex) would make Mistral's
    template raise on every tool round trip; the stored data and the client keep their own ids."""
    if not template or ID_LENGTH_CHECK not in template:
        return messages
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "id": template_id(c["id"])} if c.get("id") else c for c in m["tool_calls"]]}
        if m.get("tool_call_id"):
            m = {**m, "tool_call_id": template_id(m["tool_call_id"])}
        out.append(m)
    return out


def template_text(name_or_file: str) -> str:
    """The Jinja text of a named template, or of a template file."""
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"chat template '{name_or_file}' is neither a known name ({', '.join(TEMPLATES)}) nor a "
                      "Jinja file")


def ensure_chat_template(tokenizer: Any, name: str | None = None) -> None:
    """Give `tokenizer` a chat template: the named one (or a Jinja file), else keep its own, else refuse clearly."""
    if name is not None:
        try:
            tokenizer.chat_template = template_text(name)
        except ConfigError as exc:
            raise ConfigError(f"data.chat_template: {exc}") from None
        return
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template; set data.chat_template to one of: " + ", ".join(TEMPLATES)
            + " (or a Jinja file)"
        )
