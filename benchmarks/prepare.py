"""Prepare throughput: `llmforge prepare` against a plain `datasets.map` tokenization, in one process.

    python benchmarks/prepare.py [--records 100000] [--workdir build/bench-prepare]

The baseline is what fine-tuning scripts commonly do (and the seed did): `load_dataset("json")`, then a
batched `map` that formats an Alpaca-style prompt and tokenizes it with truncation and padding to max_length.
It validates nothing, masks nothing and splits nothing; llmforge does all of that. Both use the same fast
tokenizer (the demo model's). Caching is disabled for the baseline so that each of its runs does the work.
Prints records/s and tokens/s (real tokens, padding excluded) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

WORDS = ("the a of to and in is for on with as by be this that from it an are or can def return class import "
         "value list dict string number file path data model token train test split error line field").split()


def synthetic_jsonl(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            record = {"instruction": f"{sentence(5, 25)} #{i}", "input": sentence(0, 30) if i % 2 else "",
                      "output": sentence(10, 120)}
            f.write(json.dumps(record) + "\n")


def baseline(path: Path, model_dir: str, max_length: int) -> tuple[float, int]:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_caching()

    def tokenize(batch: dict) -> dict:  # closes over the tokenizer loaded below
        texts = [
            f"### Instruction:\n{ins}\n\n" + (f"### Input:\n{inp}\n\n" if inp else "") + f"### Response:\n{out}"
            for ins, inp, out in zip(batch["instruction"], batch["input"], batch["output"])
        ]
        enc = tokenizer(texts, truncation=True, padding="max_length", max_length=max_length)
        enc["labels"] = [ids[:] for ids in enc["input_ids"]]
        return enc

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # a script loads its tokenizer; so does prepare
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache)
        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names)
        tokens = sum(sum(mask) for mask in ds["attention_mask"])
    return time.perf_counter() - start, tokens


def llmforge_prepare(path: Path, out: Path, max_length: int) -> tuple[float, int, bool]:
    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    cfg = PrepareConfig(model=ModelConfig(name_or_path="demo"),
                        data=DataConfig(path=[str(path)], max_length=max_length, overlong="truncate"),
                        output_dir=out)
    start = time.perf_counter()
    result = prepare(cfg)
    return time.perf_counter() - start, result.metrics["tokens"]["total"], result.cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-prepare"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synthetic-{args.records}.jsonl"
    if not data.exists():
        synthetic_jsonl(data, args.records)
    from llmforge.models.reference import DEMO_DIR

    out = args.workdir / "prepared"
    shutil.rmtree(out, ignore_errors=True)

    base_s, base_tokens = baseline(data, str(DEMO_DIR), args.max_length)
    cold_s, tokens, cached = llmforge_prepare(data, out, args.max_length)
    assert not cached
    warm_s, _, cached = llmforge_prepare(data, out, args.max_length)
    assert cached
    n = args.records
    rows = [
        ("datasets.map (baseline)", base_s, base_tokens),
        ("llmforge prepare (cold)", cold_s, tokens),
        ("llmforge prepare (cached)", warm_s, tokens),
    ]
    print(f"\n{n:,} records, max_length {args.max_length}")
    print(f"{'':28} {'seconds':>9} {'records/s':>11} {'tokens/s':>11} {'speed vs baseline':>18}")
    for name, seconds, tok in rows:
        print(f"{name:28} {seconds:9.2f} {n / seconds:11,.0f} {tok / seconds:11,.0f} {base_s / seconds:17.2f}x")
    print(f"\ncached / cold speedup: {cold_s / warm_s:,.0f}x (target >= 50x); "
          f"cold vs baseline: {base_s / cold_s:.2f}x (target >= 1x)")
    out = Path(__file__).resolve().parent / "results" / "prepare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": n, "max_length": args.max_length, "baseline_seconds": base_s,
                               "baseline_tokens": base_tokens, "cold_seconds": cold_s, "cached_seconds": warm_s,
                               "tokens": tokens}, indent=2) + "\n")


if __name__ == "__main__":
    main()
