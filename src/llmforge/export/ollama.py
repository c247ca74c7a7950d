"""The Ollama `Modelfile` written next to a GGUF: the family's chat format in Ollama's Go template language, its
default system prompt, and where generation stops."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmforge.export.gguf_vocab import Vocab


@dataclass(frozen=True)
class OllamaChat:
    """A family's chat format in Ollama's Go template language, recognised by the turn markers of its HF template.

    No bos in the templates: Ollama adds it from the GGUF's add_bos_token, as the HF template writes `bos_token`
    first. The generation prompt is always added (Ollama answers). Ollama puts the Modelfile's SYSTEM into the
    messages when a request has no system message, so a template's default system prompt becomes SYSTEM."""

    marker: str  # a turn marker only this family's HF template writes
    template: str
    system: str  # regex: the default system prompt in an HF rendering of one user turn
    end_of_turn: str


OLLAMA_CHATS = (
    OllamaChat("<|im_start|>",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n",
               r"<\|im_start\|>system\n(.*?)<\|im_end\|>", "<|im_end|>"),
    OllamaChat("<|start_header_id|>",
               "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
               "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", "<|eot_id|>"),
)
_MARK = "\x00user-turn\x00"


def default_system_prompt(chat_template: str, vocab: Vocab, pattern: str) -> str | None:
    """The system prompt an HF template writes into a conversation that has none (Qwen2's "You are a helpful
    assistant.", SmolLM2's), or None."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    text = _compile_jinja_template(chat_template).render(
        messages=[{"role": "user", "content": _MARK}], add_generation_prompt=False, bos_token="",
        eos_token=vocab.eos_token or "")
    found = re.search(pattern, text.split(_MARK)[0], re.DOTALL)
    return found.group(1) if found else None


def render_modelfile(gguf_name: str, vocab: Vocab, temperature: float) -> str:
    """An Ollama Modelfile for `gguf_name` (in the same directory): the family's TEMPLATE, its default system prompt
    as SYSTEM, and stop at eos and at the end-of-turn token."""
    lines = [f"FROM ./{gguf_name}"]
    chat = next((c for c in OLLAMA_CHATS if vocab.chat_template and c.marker in vocab.chat_template), None)
    stops = [vocab.eos_token] if vocab.eos_token else []
    if chat is None:
        lines.append("# no TEMPLATE: Ollama falls back to the chat template stored in the GGUF")
    else:
        lines.append(f'TEMPLATE """{chat.template}"""')
        system = default_system_prompt(vocab.chat_template or "", vocab, chat.system)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        stops += [chat.end_of_turn] if chat.end_of_turn not in stops else []
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"
