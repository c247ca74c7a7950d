"""The Ollama `Modelfile` written next to a GGUF: the family's chat format in Ollama's Go template language, its
default system prompt, and where generation stops."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmforge.export.gguf_vocab import USER_TURN, Vocab, render_user_turn


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
    # Gemma: the assistant is "model"; its HF template refuses a system role, so a system message is a user turn
    OllamaChat("<start_of_turn>",
               "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
               "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
               r"<start_of_turn>system\n(.*?)<end_of_turn>", "<end_of_turn>"),
    OllamaChat("<|end|>",  # Phi-3
               "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
               r"<\|system\|>\n(.*?)<\|end\|>", "<|end|>"),
)


def default_system_prompt(chat_template: str, vocab: Vocab, pattern: str) -> str | None:
    """The system prompt an HF template writes into a conversation that has none (Qwen2's "You are a helpful
    assistant.", SmolLM2's), or None."""
    text = render_user_turn(chat_template, vocab.eos_token or "")
    found = re.search(pattern, text.split(USER_TURN)[0], re.DOTALL) if text else None
    return found.group(1) if found else None


def _turns_end_with_eos(vocab: Vocab) -> bool:
    """DialoGPT's format: each turn followed by eos, no roles. What a model without a chat template (GPT-2) knows,
    and transformers' default chat template for GPT-2 tokenizers (llmforge's named `dialogpt` template)."""
    eos = vocab.eos_token
    return bool(eos) and (vocab.chat_template is None or render_user_turn(vocab.chat_template, eos) == USER_TURN + eos)


def render_modelfile(gguf_name: str, vocab: Vocab, temperature: float) -> str:
    """An Ollama Modelfile for `gguf_name` (in the same directory): the family's TEMPLATE, its default system prompt
    as SYSTEM, and stop at eos and at the end-of-turn token."""
    lines = [f"FROM ./{gguf_name}"]
    chat = next((c for c in OLLAMA_CHATS if vocab.chat_template and c.marker in vocab.chat_template), None)
    stops = [vocab.eos_token] if vocab.eos_token else []
    if _turns_end_with_eos(vocab):
        lines.append(f'TEMPLATE """{{{{- range .Messages }}}}{{{{ .Content }}}}{vocab.eos_token}{{{{ end }}}}"""')
    elif chat is None:
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
