"""The ONNX Runtime backend, over `llmforge.models.ort.OrtCausalLM` (CPU).

The export's graph takes and returns the KV cache as flat numpy arrays; they are kept as torch tensors
(zero-copy views) so rows join and leave exactly as they do for the transformers backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.errors import LlmforgeError
from llmforge.models.loader import context_length
from llmforge.models.ort import CONFIG_FILE as ONNX_CONFIG
from llmforge.serve.backends import kv
from llmforge.serve.backends.base import LoadOptions, eos_ids, generation_config, resolve_max_len


def _layers(present: list[np.ndarray]) -> list[kv.KVLayer]:
    return [kv.KVLayer(torch.from_numpy(present[i]), torch.from_numpy(present[i + 1]))
            for i in range(0, len(present), 2)]


def _flat(layers: list[kv.KVLayer]) -> list[np.ndarray]:
    # Joined and selected caches are strided views; ONNX Runtime wants contiguous buffers.
    return [np.ascontiguousarray(t.numpy()) for layer in layers for t in (layer.keys, layer.values)]


class OnnxBackend:
    name = "onnx"

    def __init__(self, runtime: Any, tokenizer: Any, max_model_len: int, eos_token_ids: frozenset[int],
                 info: dict[str, Any]) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids
        self.pad_id = runtime.config.get("pad_token_id") or 0
        self.info = {"backend": self.name, "device": "cpu", "max_model_len": max_model_len, **info}

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, kv.PaddedBatch]:
        ids, mask = kv.left_pad(prompts, self.pad_id, torch.device("cpu"))  # (B, W)
        logits, present = self.runtime.forward(ids.numpy(), mask.numpy())  # (B, W, V)
        batch = kv.PaddedBatch(layers=_layers(present), mask=mask, lengths=mask.sum(-1))
        return torch.from_numpy(logits[:, -1]).float(), batch  # (B, V)

    def decode(self, state: kv.PaddedBatch, tokens: torch.Tensor) -> torch.Tensor:
        mask = kv.grow(state)  # (B, T + 1)
        logits, present = self.runtime.forward(tokens[:, None].numpy(), mask.numpy(), _flat(state.layers))
        state.layers, state.mask, state.lengths = _layers(present), mask, state.lengths + 1
        return torch.from_numpy(logits[:, -1]).float()  # (B, V)

    def join(self, state: kv.PaddedBatch, other: kv.PaddedBatch) -> kv.PaddedBatch:
        return kv.join(state, other)

    def select(self, state: kv.PaddedBatch, rows: list[int]) -> kv.PaddedBatch | None:
        return kv.select(state, rows)


def load(directory: str, opts: LoadOptions) -> OnnxBackend:
    from transformers import AutoConfig, AutoTokenizer

    from llmforge.models.ort import OrtCausalLM

    if opts.device not in ("auto", "cpu"):
        raise LlmforgeError(f"the onnx backend runs on the CPU; device '{opts.device}' is not available to it")
    path = Path(directory)
    runtime = OrtCausalLM.load(path, threads=opts.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = AutoConfig.from_pretrained(str(path))
    generation = generation_config(path)  # None: eos comes from the tokenizer alone
    quant = json.loads((path / ONNX_CONFIG).read_text()).get("quantization")
    max_len = resolve_max_len(context_length(config), opts.max_model_len)
    return OnnxBackend(runtime, tokenizer, max_len, eos_ids(tokenizer, generation),
                       {"path": str(path), "adapter": None, "quantization": quant})
