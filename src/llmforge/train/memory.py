"""Training memory: what a run will hold, and where gradient checkpointing pays.

Shared by the run (`train.gradient_checkpointing: auto`) and the dry run (`llmforge.train.estimate`). The formulas
are `llmforge.models.footprint`'s (shared with `llmforge models`) over the loaded model, at the run's largest batch
(batch size x the longest sample: grouped batching starts with the longest samples), plus the loss's logits and
the process's own resident memory before the model loads (Python, torch, transformers), which a run pays too.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from typing import Any

import torch

from llmforge.config import TrainOptions
from llmforge.data.tokenize import IGNORE
from llmforge.models.footprint import activation_bytes, training_memory
from llmforge.train.loss import chunk_tokens, chunked_loss_applies
from llmforge.train.methods import ADAPTER_METHODS

# Checkpointing costs a second forward pass through every layer: ~+33% step time for full fine-tuning, ~+50% for LoRA
# (whose backward pass skips the frozen weights' gradients; measured +52% on SmolLM2, benchmarks/NOTES.md). It pays
# where the activations it drops would take a large share of the machine: more than this fraction of its memory.
CHECKPOINT_SHARE = 0.25
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_freed_memory() -> None:
    """Make glibc's malloc give blocks of 1 MiB or more back to the system as soon as they are freed.

    By default its threshold for that rises with every large block freed (up to 32 MiB), and the blocks below it
    stay in the heap for reuse. A training step frees and reallocates gigabytes of such blocks (layer activations,
    recomputed layers, chunks of logits), and the heap fragments: measured on SmolLM2 (batch 8 x 511, LoRA,
    checkpointing) the process held 5.7 GB at its peak for 1.2 GB of live tensors; with a fixed threshold, 1.8 GB.
    Process-wide and harmless elsewhere; skipped when the user tunes malloc or preloads another allocator.
    """
    tuned = ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in tuned):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


def machine_memory() -> int | None:
    """Bytes of memory of the device training runs on: the GPU's, else the machine's RAM (None if unknown)."""
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)


def sample_lengths(dataset: Any) -> list[int]:
    """Tokens per sample, read from the Arrow column's offsets (no Python list of every token id)."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.data.column("input_ids")).to_pylist()


def scored_tokens(dataset: Any, batch: int) -> int:
    """The most tokens with a label (the ones the loss projects onto the vocabulary) that a batch of `batch`
    samples can hold: the sum of the `batch` largest per-sample counts. Read chunk by chunk from Arrow."""
    import numpy as np
    import pyarrow.compute as pc

    counts = []
    for chunk in dataset.data.column("labels").chunks:
        lengths = chunk.value_lengths().to_numpy(zero_copy_only=False)
        scored = pc.not_equal(chunk.flatten(), IGNORE).to_numpy(zero_copy_only=False)  # (tokens,) bool
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        counts.append(np.add.reduceat(scored, starts, dtype=np.int64) if len(scored) else np.zeros(0, np.int64))
    per_sample = np.sort(np.concatenate(counts))
    return int(per_sample[-batch:].sum())


def _activations(model: Any, opts: TrainOptions, longest: int, padded: bool, checkpointing: bool) -> int:
    fp32 = next(model.parameters()).dtype == torch.float32 and opts.precision not in ("bf16", "fp16")
    lora = opts.weights in ADAPTER_METHODS
    return activation_bytes(model.config, longest, opts.batch_size, fp32, checkpointing,
                            lora_rank=opts.lora.r if lora else None, lora_dropout=opts.lora.dropout if lora else 0.0,
                            padded=padded)


def gradient_checkpointing(opts: TrainOptions, model: Any, longest: int, padded: bool = True) -> bool:
    """`train.gradient_checkpointing`, with `auto` resolved: on where the activations would exceed
    CHECKPOINT_SHARE of the machine's memory (and always for QLoRA, which is chosen to save memory)."""
    if opts.gradient_checkpointing != "auto":
        return bool(opts.gradient_checkpointing)
    if opts.weights == "qlora":
        return True
    available = machine_memory()
    return available is None or _activations(model, opts, longest, padded, False) > CHECKPOINT_SHARE * available


def loss_bytes(model: Any, tokens: int, scored: int, chunked: bool) -> int:
    """Peak bytes of the loss over the vocabulary. Chunked: fp32 logits, their log-softmax and its gradient for one
    chunk of the `scored` tokens, and those tokens' hidden states and gradients. The model's own loss: logits for
    every one of the batch's `tokens`, their log-softmax and both their gradients."""
    vocab = model.get_output_embeddings().weight.shape[0]
    if chunked:
        return 3 * min(scored, chunk_tokens(vocab)) * vocab * 4 + 2 * scored * model.config.hidden_size * 4
    return 4 * tokens * vocab * 4


def trl_fused_head_bytes(model: Any, tokens: int) -> int | None:
    """Peak bytes of TRL's fused LM head (`add_fused_lm_head`, which its DPO and KTO losses call) over `tokens`
    positions, or None where this TRL has none. It never builds the (tokens, vocabulary) logits: it projects tiles of
    at most TOKEN_CHUNK_SIZE tokens onto a fixed-width buffer of _CHUNKED_LOGPROB_CHUNK_SIZE vocabulary columns
    (whatever the vocabulary's size, so 128 MiB for a 512-token vocabulary too), and its backward pass makes that
    buffer again beside the hidden states' fp32 gradient. Off CUDA it scores every position, prompt and padding
    included. Measured against a DPO run's live tensors in tests/unit/train/test_preference.py."""
    try:
        from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE
    except ImportError:
        return None
    hidden = model.get_output_embeddings().weight.shape[1]
    per_token = 8  # running max, sums, target logit, log-probability...: fp32 vectors over the tokens
    return 4 * (min(tokens, TOKEN_CHUNK_SIZE) * _CHUNKED_LOGPROB_CHUNK_SIZE + tokens * (hidden + per_token))


def memory_estimate(model: Any, opts: TrainOptions, longest: int, scored: int, padded: bool, checkpointing: bool,
                    runtime: int, loss: int | None = None) -> dict[str, int]:
    """Bytes by part (weights, gradients, optimizer, activations, loss, runtime) and their total, for `model`
    as loaded for training (method applied) and the run's largest batch: `longest` tokens per sample, `scored`
    labelled tokens in all (`scored_tokens`). `loss`: the loss's own peak when it is not llmforge's (TRL's)."""
    params = list(model.parameters())  # tied weights are one Parameter: counted once
    trainable = [p for p in params if p.requires_grad]
    chunked = chunked_loss_applies(model, opts)
    return training_memory(
        weight_bytes=sum(p.numel() * p.element_size() for p in params),
        trainable=sum(p.numel() for p in trainable),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        activations=_activations(model, opts, longest, padded, checkpointing),
        loss=loss if loss is not None else loss_bytes(model, opts.batch_size * longest, scored, chunked),
        runtime=runtime,
    )
