"""`llmforge train --dry-run`: parameters, a memory estimate and a measured time estimate, before training.

Memory (bytes): `llmforge.train.memory`'s estimate at the run's largest batch, checked against a measured run in
tests/unit/train/test_memory.py.
Time: the median of a few real forward+backward passes on training batches, times the steps per epoch. They run
the run's own loss and gradient checkpointing, on batches no larger than the run's, so the dry run never needs
more memory than the run it estimates.

Preference methods (dpo, orpo, kto): the trainer the run would build (TRL's, `preference_trainer`) times its own
training steps, reference pass included. Its largest batch holds chosen and rejected sequences, twice the pairs,
at the longest pair's length; DPO's and KTO's loss is TRL's fused LM head (`trl_fused_head_bytes`), ORPO's full
logits; `full` weights add TRL's frozen reference copy. Checked against a measured DPO run (LoRA and full) in
tests/unit/train/test_preference.py; KTO's unpaired batches and KL pass are taken as DPO's pairs.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llmforge.config import PREFERENCE_METHODS, TrainOptions
from llmforge.data.splits import load_split
from llmforge.errors import LlmforgeError
from llmforge.metrics.preference import preference_rows
from llmforge.train.config import TrainConfig
from llmforge.train.loss import chunked_loss_applies, lm_loss
from llmforge.train.memory import (
    gradient_checkpointing,
    loss_bytes,
    memory_estimate,
    resident_bytes,
    return_freed_memory,
    sample_lengths,
    scored_tokens,
    trl_fused_head_bytes,
)
from llmforge.train.methods import apply_method, load_base
from llmforge.train.preference import pair_lengths


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
        return _preference_estimate(cfg, measured_steps)
    return_freed_memory()  # as the run does
    runtime = resident_bytes()  # before the data and the model: what the run pays for Python and its libraries
    train_set = load_split(cfg.data, "train")
    lengths = sorted(sample_lengths(train_set))
    longest = lengths[-1]
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
    return _report(model, opts, lengths, checkpointing, memory, times)


def _preference_estimate(cfg: TrainConfig, measured_steps: int) -> dict[str, Any]:
    from llmforge.train.runner import preference_trainer

    opts = cfg.train
    return_freed_memory()
    runtime = resident_bytes()
    model, tokenizer = load_base(cfg.model, opts)
    model.config.use_cache = False
    train_set = preference_rows(load_split(cfg.data, "train"), tokenizer)
    if not len(train_set):
        raise LlmforgeError(f"{cfg.data}: the train split holds no preference pairs")
    lengths = sorted(pair_lengths(train_set, tokenizer))
    longest = lengths[-1]
    steps = min(len(train_set), (measured_steps + 1) * opts.batch_size)
    with tempfile.TemporaryDirectory() as scratch:  # the trainer's output dir: nothing is saved to it
        trainer = preference_trainer(cfg, model, tokenizer, train_set.select(range(steps)), train_set.select([]),
                                     Path(scratch), [])
        trained = trainer.model  # with the adapter TRL put on, if any
        checkpointing = bool(trainer.args.activation_checkpointing)
        doubled = opts.model_copy(update={"batch_size": 2 * opts.batch_size})  # chosen and rejected rows
        rows = doubled.batch_size * longest
        fused = trl_fused_head_bytes(trained, rows) if opts.method in ("dpo", "kto") else None
        loss = fused if fused is not None else loss_bytes(trained, rows, rows, chunked=False)  # ORPO: full logits
        memory = memory_estimate(trained, doubled, longest, 0, True, checkpointing, runtime, loss=loss)
        reference = getattr(trainer, "ref_model", None)
        if reference is not None:  # `full` weights: TRL's frozen copy of the model
            copy = sum(p.numel() * p.element_size() for p in reference.parameters())
            total = memory.pop("total")
            memory.update(reference=copy, total=total + copy)
        times = []
        trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets; each step timed alone
        for step, batch in enumerate(trainer.get_train_dataloader()):
            start = time.perf_counter()
            trainer.training_step(trained, batch)
            if step:
                times.append(time.perf_counter() - start)
            trained.zero_grad(set_to_none=True)
            if len(times) == measured_steps:
                break
    return _report(trained, opts, lengths, checkpointing, memory, times)


def _report(model: Any, opts: TrainOptions, lengths: list[int], checkpointing: bool, memory: dict[str, int],
            times: list[float]) -> dict[str, Any]:
    """What `--dry-run` shows: `lengths` the sorted sample (or pair) lengths, `times` the measured steps' seconds."""
    steps_per_epoch = math.ceil(len(lengths) / (opts.batch_size * opts.grad_accum))
    step_seconds = statistics.median(times) * opts.grad_accum if times else float("nan")
    return {
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_samples": len(lengths),
        "p95_sample_tokens": lengths[int(0.95 * (len(lengths) - 1))],
        "longest_sample_tokens": lengths[-1],
        "gradient_checkpointing": checkpointing,
        "memory_bytes": memory,
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_step": step_seconds,
        "seconds_per_epoch": step_seconds * steps_per_epoch,
        "measured_steps": len(times),
    }
