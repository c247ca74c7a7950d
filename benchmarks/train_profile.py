"""Where a LoRA training step's time goes on this CPU (torch.profiler), on a real model.

    python benchmarks/train_profile.py --data PREPARED [--model smollm2-135m-instruct] [--steps 3]

One step as `llmforge train` takes it with its defaults (LoRA r16 all-linear, `precision: auto`, the chunked
loss, `gradient_checkpointing: auto`, batch 8 of the prepared train split): the forward pass, the loss over the vocabulary, the backward pass and
the optimizer step are timed as phases (wall clock, after one warm-up step), then one step runs under
torch.profiler and its operators are listed by self CPU time. Writes benchmarks/results/train_profile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from llmforge.config import ModelConfig, TrainOptions
    from llmforge.data.splits import load_split
    from llmforge.machine import machine
    from llmforge.models.cpu import cpu_threads
    from llmforge.train.loss import causal_lm_loss
    from llmforge.train.memory import gradient_checkpointing
    from llmforge.train.methods import apply_method, load_base
    from llmforge.train.runner import make_collator, train_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset (llmforge prepare)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = parser.parse_args()
    torch.set_num_threads(cpu_threads())
    opts = TrainOptions()
    precision = train_precision(opts)
    model, tokenizer = load_base(ModelConfig(name_or_path=args.model), opts)
    model.config.use_cache = False
    model = apply_method(model, opts)
    model.train()
    rows = load_split(args.data, "train").remove_columns(["attention_mask"])
    collate = make_collator(tokenizer, "grouped")
    batches = [collate([rows[i] for i in range(b * 8, b * 8 + 8)]) for b in range(args.steps + 2)]
    longest = max(int(b["input_ids"].shape[1]) for b in batches)
    checkpointing = gradient_checkpointing(opts, model, longest)
    if checkpointing:  # as the Trainer enables it (activation_checkpointing)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.learning_rate)
    head = model.get_output_embeddings()
    autocast = precision.name == "bf16"
    phases: dict[str, list[float]] = {}

    def step(batch: dict[str, torch.Tensor], timed: bool) -> None:
        marks = [time.perf_counter()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            features = {k: v for k, v in batch.items() if k != "labels"}
            out = model(**features, output_hidden_states=-1, logits_to_keep=1)
            marks.append(time.perf_counter())
            loss = causal_lm_loss(out.hidden_states[-1], head, batch["labels"])  # its gradients, chunk by chunk
            marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if timed:
            for name, a, b in zip(("forward", "loss (head + cross-entropy, with its gradients)", "backward",
                                   "clip + optimizer"), marks, marks[1:]):
                phases.setdefault(name, []).append(b - a)

    start = time.perf_counter()
    collated = [collate([rows[i] for i in range(8)]) for _ in range(20)]
    collate_s = (time.perf_counter() - start) / len(collated)
    step(batches[0], timed=False)
    for batch in batches[1 : 1 + args.steps]:
        step(batch, timed=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batches[-1], timed=False)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    medians = {k: statistics.median(v) for k, v in phases.items()}
    step_s = sum(medians.values())
    result = {"machine": machine(), "model": args.model, "precision": precision.describe(),
              "threads": torch.get_num_threads(), "batch": 8,
              "gradient_checkpointing": checkpointing,
              "tokens_per_batch": [int(b["input_ids"].numel()) for b in batches[1 : 1 + args.steps]],
              "phase_seconds": medians, "phase_share": {k: v / step_s for k, v in medians.items()},
              "collate_seconds_per_batch": collate_s,
              "top_ops_self_cpu_share": {e.key: e.self_cpu_time_total / total for e in ops[:15]}}
    print(table)
    print(json.dumps({k: result[k] for k in ("phase_seconds", "phase_share", "collate_seconds_per_batch")}, indent=1))
    out = ROOT / "benchmarks" / "results" / "train_profile.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
