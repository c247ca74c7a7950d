"""`llmforge train --dry-run`: parameters, a memory estimate and a measured time estimate, before training.

Memory (bytes): `llmforge.train.memory`'s estimate at the run's largest batch, checked against a measured run in
tests/unit/train/test_memory.py.
Time: the median of a few real forward+backward passes on training batches, times the steps per epoch. They run
the run's own loss and gradient checkpointing, on batches no larger than the run's, so the dry run never needs
more memory than the run it estimates.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from llmforge.config import PREFERENCE_METHODS, TrainOptions
from llmforge.data.splits import load_split
from llmforge.errors import LlmforgeError
from llmforge.train.config import TrainConfig
from llmforge.train.loss import chunked_loss_applies, lm_loss
from llmforge.train.memory import (
    gradient_checkpointing,
    memory_estimate,
    resident_bytes,
    return_freed_memory,
    sample_lengths,
    scored_tokens,
)
from llmforge.train.methods import apply_method, load_base


def _step_seconds(model: Any, rows: Any, collate: Any, opts: TrainOptions, measured_steps: int) -> list[float]:
    """Forward+backward passes as the run makes them (same loss, same checkpointing); the first warms up."""
    chunked = chunked_loss_applies(model, opts)
    times = []
    for step in range(measured_steps + 1):
        batch = collate([rows[i] for i in range(step * opts.batch_size, (step + 1) * opts.batch_size)
                         if i < len(rows)])
        start = time.perf_counter()
        loss = lm_loss(model, batch)[0] if chunked else model(**batch).loss
        loss.backward()
        if step:
            times.append(time.perf_counter() - start)
        del loss
        model.zero_grad(set_to_none=True)
    return times


def estimate(cfg: TrainConfig, measured_steps: int = 3) -> dict[str, Any]:
    from llmforge.train.runner import batching_mode, make_collator

    opts = cfg.train
    if opts.method in PREFERENCE_METHODS:
        raise LlmforgeError(f"--dry-run does not estimate preference training (train.method={opts.method}) yet; "
                            "run a few steps with --max-steps instead")
    return_freed_memory()  # as the run does
    runtime = resident_bytes()  # before the data and the model: what the run pays for Python and its libraries
    train_set = load_split(cfg.data, "train")
    lengths = sorted(sample_lengths(train_set))
    longest, p95 = lengths[-1], lengths[int(0.95 * (len(lengths) - 1))]
    model, tokenizer = load_base(cfg.model, opts)
    model.config.use_cache = False
    model = apply_method(model, opts)
    model.train()
    mode = batching_mode(opts, cfg.model.attn_implementation)
    padded = mode != "packed" and lengths[0] != longest
    checkpointing = gradient_checkpointing(opts, model, longest, padded)
    if checkpointing:
        model.activation_checkpointing_enable()  # as the Trainer does (non-reentrant, inputs requiring grad)
    scored = scored_tokens(train_set, opts.batch_size)
    memory = memory_estimate(model, opts, longest, scored, padded, checkpointing, runtime)
    rows = train_set.remove_columns(["attention_mask"])
    times = _step_seconds(model, rows, make_collator(tokenizer, mode), opts, measured_steps)
    steps_per_epoch = math.ceil(len(train_set) / (opts.batch_size * opts.grad_accum))
    step_seconds = statistics.median(times) * opts.grad_accum
    return {
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_samples": len(train_set),
        "p95_sample_tokens": p95,
        "longest_sample_tokens": longest,
        "gradient_checkpointing": checkpointing,
        "memory_bytes": memory,
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_step": step_seconds,
        "seconds_per_epoch": step_seconds * steps_per_epoch,
        "measured_steps": measured_steps,
    }
