"""The one small interface every serving backend implements.

The engine owns scheduling, sampling and text; a backend only turns token ids into next-token logits for a
batch of rows whose state (a KV cache) it keeps in an object the engine passes back. Rows join and leave that
state between decode steps, which is what makes continuous batching possible. The helpers below (context length,
eos ids) read a transformers config and tokenizer the same way for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from llmforge.errors import ConfigError


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"  # "auto": cuda when present, else cpu
    dtype: str = "auto"  # "auto": bf16 where the device computes it natively (llmforge.models.cpu), else fp32
    max_model_len: int | None = None  # None: the model's own context length
    trust_remote_code: bool = False
    max_rows: int = 16  # rows decoding together (the engine's max_batch); backends with fixed slots size by it
    threads: int | None = None  # CPU threads of ONNX Runtime and llama.cpp; None: the usable cores (models.cpu)


class Backend(Protocol):
    name: str
    tokenizer: Any
    max_model_len: int
    eos_token_ids: frozenset[int]
    info: dict[str, Any]  # shown by /model_info

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any]:
        """Run the prompts; return the logits of each prompt's last position (B, V) and their batch state."""
        ...

    def decode(self, state: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); advance `state` in place; return next-token logits (B, V)."""
        ...

    def join(self, state: Any, other: Any) -> Any:
        """One state holding the rows of `state` followed by the rows of `other`."""
        ...

    def select(self, state: Any, rows: list[int]) -> Any:
        """A state holding only `rows` of `state`, in that order; None when `rows` is empty."""
        ...


def resolve_max_len(model_limit: int | None, requested: int | None) -> int:
    """The served context: the model's own unless a smaller one is asked for. Never more than the model knows."""
    if requested is not None and model_limit is not None and requested > model_limit:
        raise ConfigError(
            f"max_model_len {requested} is larger than the model's context length {model_limit}; "
            f"use at most {model_limit}"
        )
    length = requested or model_limit
    if length is None:
        raise ConfigError("the model's config names no context length; set max_model_len")
    return length


def generation_config(path: str | Path) -> Any:
    """The model's generation_config.json (its eos list: Gemma's and Llama 3's end-of-turn tokens are there, not in
    the tokenizer), or None for a directory without one."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(path))
    except OSError:
        return None


def eos_ids(tokenizer: Any, generation_config: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(generation_config, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, (list, tuple)) else ({extra} if extra is not None else set())
    return frozenset(int(i) for i in ids)
