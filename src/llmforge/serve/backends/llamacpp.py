"""The llama.cpp backend (GGUF files), over llama-cpp-python's C API: one context, one KV cache sequence per row.

Rows are llama.cpp sequence ids in a context with `n_seq_max` = the engine's batch size: a decode step is one
`llama_decode` of a batch holding one token per row (each at its own position, in its own sequence), so rows join
and leave between steps exactly as with the other backends; a row that leaves has its sequence cleared and its id
reused. Text is handled by the HF tokenizer of the model the GGUF was exported from (llmforge's export proves the
two tokenize identically).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.errors import LlmforgeError, require
from llmforge.models.cpu import cpu_threads
from llmforge.models.loader import context_length
from llmforge.models.reference import ModelRef
from llmforge.serve.backends.base import LoadOptions, eos_ids, generation_config, resolve_max_len


@dataclass
class Row:
    seq: int  # llama.cpp sequence id
    pos: int  # tokens in the sequence so far


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, lib: Any, model: Any, ctx: Any, tokenizer: Any, max_model_len: int, max_rows: int,
                 eos_token_ids: frozenset[int], info: dict[str, Any]) -> None:
        self.lib, self.model, self.ctx = lib, model, ctx
        self.tokenizer, self.max_model_len, self.eos_token_ids = tokenizer, max_model_len, eos_token_ids
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        self.memory = lib.llama_get_memory(ctx)
        self.free = list(range(max_rows))[::-1]  # unused sequence ids
        self.batch = lib.llama_batch_init(max(max_rows, max_model_len), 0, 1)
        self.info = {"backend": self.name, "device": "cpu", "max_model_len": max_model_len, **info}

    def _run(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants_logits) items as one llama.cpp batch."""
        b = self.batch
        b.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise LlmforgeError("llama.cpp could not decode the batch (context full?)")

    def _logits(self, index: int) -> torch.Tensor:
        ptr = self.lib.llama_get_logits_ith(self.ctx, index)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(self.vocab,)).copy())  # (V,)

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, list[Row]]:
        if len(prompts) > len(self.free):
            raise LlmforgeError(f"llama.cpp backend: {len(prompts)} new rows but {len(self.free)} free sequences")
        rows, logits = [], []
        for prompt in prompts:  # one prompt per llama_decode keeps the batch within n_batch
            row = Row(self.free.pop(), len(prompt))
            self._run([(t, p, row.seq, p == len(prompt) - 1) for p, t in enumerate(prompt)])
            rows.append(row)
            logits.append(self._logits(len(prompt) - 1))
        return torch.stack(logits), rows  # (B, V)

    def decode(self, state: list[Row], tokens: torch.Tensor) -> torch.Tensor:
        self._run([(int(t), row.pos, row.seq, True) for row, t in zip(state, tokens.tolist())])
        for row in state:
            row.pos += 1
        return torch.stack([self._logits(i) for i in range(len(state))])  # (B, V)

    def join(self, state: list[Row], other: list[Row]) -> list[Row]:
        return state + other

    def select(self, state: list[Row], rows: list[int]) -> list[Row] | None:
        keep = [state[i] for i in rows]
        kept = {id(r) for r in keep}
        for row in state:
            if id(row) not in kept:  # the row left the batch: clear its cache and reuse its sequence id
                self.lib.llama_memory_seq_rm(self.memory, row.seq, -1, -1)
                self.free.append(row.seq)
        return keep or None


def gguf_file(path: Path) -> Path | None:
    """`path` itself when it is a .gguf file, or the single .gguf file in the directory `path`."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    files = sorted(path.glob("*.gguf")) if path.is_dir() else []
    return files[0] if len(files) == 1 else None


def load(ref: ModelRef, opts: LoadOptions) -> LlamaCppBackend:
    """Serve the GGUF `ref` names; its text goes through the HF tokenizer of the model it was exported from (the
    export run's manifest names it: `ref.tokenizer`)."""
    from transformers import AutoConfig, AutoTokenizer

    lib = require("llama_cpp", "llamacpp")
    if opts.device not in ("auto", "cpu"):
        raise LlmforgeError(f"the llamacpp backend here runs on the CPU; device '{opts.device}' is not available")
    path = gguf_file(Path(ref.path))
    if path is None:
        raise LlmforgeError(f"{ref.ref}: not a .gguf file, nor a directory holding exactly one")
    if not ref.tokenizer or not (Path(ref.tokenizer) / "tokenizer_config.json").is_file():
        raise LlmforgeError(f"{path}: serving a GGUF needs the tokenizer of the model it was exported from; serve a "
                            "GGUF inside an `llmforge export` run directory (its manifest names the source model)")
    source = Path(ref.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    max_len = resolve_max_len(context_length(AutoConfig.from_pretrained(str(source))), opts.max_model_len)
    lib.llama_backend_init()
    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    if not model:
        raise LlmforgeError(f"llama.cpp could not load {path}")
    params = lib.llama_context_default_params()
    rows = opts.max_rows
    params.n_ctx, params.n_batch, params.n_ubatch = max_len * rows, max(max_len, rows), max(max_len, rows)
    params.n_seq_max, params.kv_unified = rows, True
    params.n_threads = params.n_threads_batch = cpu_threads(opts.threads)
    ctx = lib.llama_init_from_model(model, params)
    if not ctx:
        raise LlmforgeError(f"llama.cpp could not create a context for {path}")
    return LlamaCppBackend(lib, model, ctx, tokenizer, max_len, rows, eos_ids(tokenizer, generation_config(source)),
                           {"path": str(path), "adapter": None, "tokenizer": str(source)})
