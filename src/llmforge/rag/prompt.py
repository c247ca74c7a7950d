"""Retrieved passages into a chat: one system message the chat template renders like any other.

The passages go into the system turn, numbered, each with its source, ahead of the conversation: the template
puts them where the model expects instructions, and the user's own messages stay as they were sent. A request
that has a system message keeps it first, with the passages after it.
"""

from __future__ import annotations

import json
from typing import Any

from llmforge.rag.index import Hit

INSTRUCTION = ("Use the numbered passages below to answer when they are relevant, and say which passage you used "
               "by its number. If they do not hold the answer, say so rather than guess.")


def last_user_text(turns: list[dict[str, Any]]) -> str:
    """The retrieval query: the last user message's text ('' when there is none)."""
    return next((str(t.get("content") or "") for t in reversed(turns) if t.get("role") == "user"), "")


def context_block(hits: list[Hit]) -> str:
    passages = "\n\n".join(f"[{n}] (source: {h.source})\n{h.text.strip()}" for n, h in enumerate(hits, 1))
    return f"{INSTRUCTION}\n\n{passages}"


def with_passages(turns: list[dict[str, Any]], hits: list[Hit]) -> list[dict[str, Any]]:
    """`turns` with the passages in a system message: appended to a leading system turn, else a new first turn."""
    if not hits:
        return turns
    block = context_block(hits)
    if turns and turns[0].get("role") in ("system", "developer"):
        first = dict(turns[0], content=f"{turns[0].get('content') or ''}\n\n{block}".lstrip())
        return [first, *turns[1:]]
    return [{"role": "system", "content": block}, *turns]


def sources_header(hits: list[Hit]) -> str:
    """The X-LLMforge-Sources value: compact JSON, ASCII only (a header is latin-1), without passage text."""
    return json.dumps([{"id": h.id, "source": h.source, "score": round(h.score, 4)} for h in hits],
                      separators=(",", ":"), ensure_ascii=True)
