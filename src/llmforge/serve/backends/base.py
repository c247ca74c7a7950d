"""The one small interface every serving backend implements.

The engine owns scheduling, sampling and text; a backend only turns token ids into next-token logits for a
batch of rows whose state (a KV cache) it keeps in an object the engine passes back. Rows join and leave that
state between decode steps, which is what makes continuous batching possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"  # "auto": cuda when present, else cpu
    dtype: str = "auto"  # "auto": fp32 on CPU, bf16 on a GPU that supports it
    max_model_len: int | None = None  # None: the model's own context length
    trust_remote_code: bool = False
    max_rows: int = 16  # rows decoding together (the engine's max_batch); backends with fixed slots size by it
    threads: int | None = None  # CPU threads for backends that take their own (llama.cpp)


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
