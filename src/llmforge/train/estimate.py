"""`llmforge train --dry-run`: parameters, a memory estimate and a measured time estimate, before training.

Memory (bytes): `llmforge.models.footprint`'s formulas (shared with `llmforge models`) over the loaded model.
Time: the median of a few real forward+backward passes on training batches, times the steps per epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from llmforge.data.splits import load_split
from llmforge.models.footprint import activation_bytes, training_memory
from llmforge.train.config import TrainConfig
from llmforge.train.methods import apply_method, load_base


def estimate(cfg: TrainConfig, measured_steps: int = 3) -> dict[str, Any]:
    from llmforge.train.runner import batching_mode, make_collator

    opts = cfg.train
    train_set = load_split(cfg.data, "train")
    model, tokenizer = load_base(cfg.model, opts)
    model.config.use_cache = False
    model = apply_method(model, opts)
    model.train()
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    lengths = sorted(len(x) for x in train_set["input_ids"])
    p95 = lengths[int(0.95 * (len(lengths) - 1))]
    fp32 = next(model.parameters()).dtype == torch.float32
    memory = training_memory(
        weight_bytes=sum(p.numel() * p.element_size() for p in params),
        trainable=sum(p.numel() for p in trainable),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        activations=activation_bytes(model.config, p95, opts.batch_size, fp32, opts.gradient_checkpointing),
    )
    collate = make_collator(tokenizer, batching_mode(opts, cfg.model.attn_implementation))
    times = []
    rows = train_set.remove_columns(["attention_mask"])
    for step in range(measured_steps + 1):  # the first pass warms up
        batch = collate([rows[i] for i in range(step * opts.batch_size, (step + 1) * opts.batch_size)
                         if i < len(rows)])
        start = time.perf_counter()
        model(**batch).loss.backward()
        if step:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    steps_per_epoch = math.ceil(len(train_set) / (opts.batch_size * opts.grad_accum))
    step_seconds = statistics.median(times) * opts.grad_accum
    return {
        "total_parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "train_samples": len(train_set),
        "p95_sample_tokens": p95,
        "memory_bytes": memory,
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_step": step_seconds,
        "seconds_per_epoch": step_seconds * steps_per_epoch,
        "measured_steps": measured_steps,
    }
