"""Chat templates, for tokenizers that come without one.

The template decides what the model sees in training *and* in serving, so it is saved with every tokenizer
that llmforge writes: a model good in training and garbage after export usually differs here.
"""

from __future__ import annotations

from typing import Any

from llmforge.errors import ConfigError

# ChatML, with the end-of-turn marker doubling as eos so generation stops after each assistant turn.
CHATML = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TEMPLATES = {"chatml": CHATML}


def ensure_chat_template(tokenizer: Any, name: str | None = None) -> None:
    """Give `tokenizer` a chat template: the named one, else keep its own, else refuse clearly."""
    if name is not None:
        if name not in TEMPLATES:
            raise ConfigError(f"data.chat_template: unknown template '{name}'; allowed: {', '.join(TEMPLATES)}")
        tokenizer.chat_template = TEMPLATES[name]
        return
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template; set data.chat_template to one of: " + ", ".join(TEMPLATES)
        )
