"""Prompts to token ids, exactly as training tokenized them (see `llmforge.data.tokenize`).

Chat: the tokenizer's own template renders the conversation (it writes bos itself), then the text is encoded
without special tokens. Plain text: encoded with the tokenizer's special tokens, as text samples were.
"""

from __future__ import annotations

from typing import Any

from llmforge.errors import LlmforgeError
from llmforge.models.chat import template_ids, with_system_folded


class PromptError(LlmforgeError):
    """The prompt cannot be built for this model (e.g. chat without a chat template)."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_ids(tokenizer: Any, messages: list[dict[str, Any]], model_name: str,
             add_generation_prompt: bool = True, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """`tools` (OpenAI's function definitions) go to the template's own `tools`, as the model was trained to
    see them; a template that does not read them leaves them out."""
    if not has_chat_template(tokenizer):
        raise PromptError(
            f"model '{model_name}' has no chat template, so it cannot take chat messages; "
            "use /v1/completions with a plain prompt"
        )
    # 'developer' is OpenAI's newer name for 'system'; templates written before it know only 'system'.
    turns = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in messages]
    turns = template_ids(turns, tokenizer.chat_template)  # as prepare renders them
    try:  # folded as prepare folds it, so the model sees the prompt it was trained on
        text, _ = with_system_folded(
            lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                    **({"tools": tools} if tools else {})),
            turns)
    except Exception as exc:  # a template may refuse a conversation (roles out of order, ...): the caller's to fix
        raise PromptError(f"model '{model_name}''s chat template refused these messages: {exc}") from exc
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def message_ids(tokenizer: Any, message: str, model_name: str, context: str | None = None) -> list[int]:
    """the simple /chat message: one user turn when the model has a chat template, else plain text. `context`
    (`serve --rag`'s passages) goes in a system turn before it, or, without a template, in the text before it."""
    if has_chat_template(tokenizer):
        system = [{"role": "system", "content": context}] if context else []
        return chat_ids(tokenizer, [*system, {"role": "user", "content": message}], model_name)
    return text_ids(tokenizer, f"{context}\n\n{message}" if context else message)


def token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)
