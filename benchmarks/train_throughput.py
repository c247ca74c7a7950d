"""Training throughput: `llmforge train` (LoRA) against the seed's recipe, in one process, same model and data.

    python benchmarks/train_throughput.py [--records 1000] [--max-length 512]

Seed recipe (the baseline): plain transformers Trainer + peft, Alpaca-style prompt text, every example padded
to max_length by the tokenize step, `DataCollatorForLanguageModeling(mlm=False)` (so it trains on prompt and
response tokens). llmforge: `prepare` (chat template, loss on responses only) + `train` (default batching: length-grouped, dynamically padded on CPU).
Both: the embedded demo base model, the same training records (stdlib docstring -> function pairs, train split),
the same LoRA settings, epochs, learning rate, schedule and effective batch. Held-out loss is measured on the
responses of the same test records, each model in the prompt format it was trained on.
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LR, EPOCHS, BATCH, R, ALPHA, DROPOUT = 2e-3, 1, 8, 16, 32, 0.05


def seed_text(record: dict) -> tuple[str, str]:
    return f"### Instruction:\n{record['input']}\n\n### Response:\n", record["output"]


def seed_recipe(records: list[dict], test: list[dict], max_length: int, workdir: Path, base: str = "demo",
                lr: float = LR) -> dict:
    """The seed's recipe on `base` (a reference: 'demo', a preset, a dir), fp32; timed as trainer.train()."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from llmforge.metrics.score import score
    from llmforge.models.reference import resolve_model

    begin = time.perf_counter()
    path = resolve_model(base).path
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    texts = ["".join(seed_text(r)) + tokenizer.eos_token for r in records]
    enc = tokenizer(texts, truncation=True, padding="max_length", max_length=max_length)
    train_set = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    real_tokens = sum(sum(m) for m in enc["attention_mask"])
    args = TrainingArguments(output_dir=str(workdir / "seed"), num_train_epochs=EPOCHS, learning_rate=lr,
                             per_device_train_batch_size=BATCH, lr_scheduler_type="cosine", warmup_steps=0.05,
                             logging_steps=50, save_strategy="no", report_to="none", seed=0, use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    total = time.perf_counter() - begin
    model.eval()
    rows = []
    for r in test:  # responses scored in the seed's own prompt format
        prompt, answer = seed_text(r)
        p_ids = tokenizer(prompt)["input_ids"]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids})
    held_out = score(model, Dataset.from_list(rows), batch_size=16)
    return {"seconds": seconds, "real_tokens": real_tokens * EPOCHS, "processed_tokens": len(texts) * max_length * EPOCHS,
            "held_out_response_loss": held_out["loss"], "held_out_tokens": held_out["tokens"],
            "steps": trainer.state.global_step, "total_seconds": total}


def llmforge_recipe(data: Path, test_count: int, max_length: int, workdir: Path, base: str = "demo",
                    lr: float = LR) -> dict:
    """llmforge's prepare + train (its defaults but the shared settings) on `base`; timed as its train loop."""
    from llmforge.config import LoraOptions, ModelConfig, TrainOptions
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.eval.config import EvalConfig, EvalOptions
    from llmforge.eval.runner import evaluate
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare
    from llmforge.train.config import TrainConfig
    from llmforge.train.runner import train

    begin = time.perf_counter()
    prepared = prepare(PrepareConfig(model=ModelConfig(name_or_path=base),
                                     data=DataConfig(path=[str(data)], max_length=max_length, overlong="truncate",
                                                     split=SplitConfig(column="split")),
                                     output_dir=workdir / "prepared"))
    options = TrainOptions(method="lora", epochs=EPOCHS, learning_rate=lr, batch_size=BATCH, warmup_ratio=0.05,
                           lora=LoraOptions(r=R, alpha=ALPHA, dropout=DROPOUT))
    result = train(TrainConfig(model=ModelConfig(name_or_path=base), data=prepared.output_dir, train=options,
                               output_dir=workdir / "llmforge"))
    total = time.perf_counter() - begin
    curve = json.loads((workdir / "llmforge" / "loss_curve.json").read_text())  # Trainer's log history
    in_loop_eval = sum(h.get("eval_runtime", 0.0) for h in curve)  # validation inside trainer.train()
    held_out = evaluate(EvalConfig(model=ModelConfig(name_or_path=str(workdir / "llmforge")),
                                   data=prepared.output_dir, eval=EvalOptions(split="test", batch_size=16,
                                                                              max_samples=test_count),
                                   output_dir=workdir / "llmforge-eval")).metrics
    return {"seconds": result.metrics["train_runtime_seconds"], "real_tokens": result.metrics["train_tokens"],
            "processed_tokens": result.metrics["train_tokens"], "held_out_response_loss": held_out["loss"],
            "held_out_tokens": held_out["tokens"], "steps": result.metrics["train_steps"], "total_seconds": total,
            "validation_seconds_in_train": in_loop_eval,
            "peak_memory_bytes": result.metrics.get("peak_memory_bytes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000, help="training records (train split)")
    parser.add_argument("--test-records", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-train")
    args = parser.parse_args()
    from llmforge.data.sources import docstring_function_records, module_split

    records = [{**r, "split": module_split(r["module"])} for r in docstring_function_records()]
    train_records = [r for r in records if r["split"] == "train"][: args.records]
    test_records = [r for r in records if r["split"] == "test"][: args.test_records]
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "data.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("input", "output", "split")}) + "\n"
                            for r in train_records + test_records))
    ours = llmforge_recipe(data, len(test_records), args.max_length, args.workdir)
    seed = seed_recipe(train_records, test_records, args.max_length, args.workdir)
    result = {"records": len(train_records), "test_records": len(test_records), "max_length": args.max_length,
              "epochs": EPOCHS, "batch": BATCH, "lora_r": R, "seed": seed, "llmforge": ours,
              "speedup_wall": seed["seconds"] / ours["seconds"]}
    print(f"\n{len(train_records)} training records, {EPOCHS} epoch, LoRA r={R}, batch {BATCH}")
    print(f"{'':12} {'wall s':>8} {'real tok/s':>11} {'processed tok/s':>16} {'held-out response loss':>23}")
    for name, r in (("seed", seed), ("llmforge", ours)):
        print(f"{name:12} {r['seconds']:8.1f} {r['real_tokens'] / r['seconds']:11,.0f} "
              f"{r['processed_tokens'] / r['seconds']:16,.0f} {r['held_out_response_loss']:23.4f}")
    print(f"\nwall-time speedup: {result['speedup_wall']:.2f}x (target >= 3x at the same or lower held-out loss)")
    out = ROOT / "benchmarks" / "results" / "train_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
