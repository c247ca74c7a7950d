"""Compression on the demo fine-tuned model: quality against the fp32 parent, size, and decode speed.

    python bench/compress.py [runs/demo] [--quality-samples 200]

Every variant is made by `llmforge.compress` from the fine-tuned model of `make demo` (runs/demo/train), reloaded
from its files, and measured in this process the same way as the fp32 parent (the baseline): held-out response
perplexity, KL and top-1 agreement against the parent, file size, and greedy decode tokens/s with
`model.generate` at batch 1 and 8 (128-token prompt, 32 new tokens; prefill excluded; warm-up, median of 3).
Both torch thread counts are tried for every model and the faster is kept (small models often decode faster on
one thread). torchao's int8 kernels are measured when torchao is importable (`pip install 'llmforge[torchao]'`).
Writes bench/results/compress.json and bench/results/compress.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: list[dict[str, Any]] = [
    {"name": "int8-dynamic (torch)", "method": "quantize", "quantize": {"scheme": "int8-dynamic", "kernel": "torch"}},
    {"name": "int8-dynamic, no SmoothQuant", "method": "quantize",
     "quantize": {"scheme": "int8-dynamic", "kernel": "torch", "smoothquant": None}},
    {"name": "int8-dynamic (torchao)", "method": "quantize",
     "quantize": {"scheme": "int8-dynamic", "kernel": "torchao"}, "needs": "torchao"},
    {"name": "int8-weight-only (torch)", "method": "quantize",
     "quantize": {"scheme": "int8-weight-only", "kernel": "torch"}},
    {"name": "int8-weight-only (torchao)", "method": "quantize",
     "quantize": {"scheme": "int8-weight-only", "kernel": "torchao"}, "needs": "torchao"},
    {"name": "bf16", "method": "quantize", "quantize": {"scheme": "bf16"}},
    {"name": "structured 25%", "method": "prune", "prune": {"method": "structured", "sparsity": 0.25}},
    {"name": "structured 25% + heads", "method": "prune",
     "prune": {"method": "structured", "sparsity": 0.25, "heads": True}},
    {"name": "structured 25% + recovery (full, lr 5e-4)", "method": "prune",
     "prune": {"method": "structured", "sparsity": 0.25, "recovery": "full",
               "train": {"method": "full", "max_steps": 150, "learning_rate": 5e-4, "warmup_ratio": 0.05}}},
    {"name": "structured 25% + recovery (full)", "method": "prune",
     "prune": {"method": "structured", "sparsity": 0.25, "recovery": "full"}},
    {"name": "structured 25% + recovery (distill)", "method": "prune",
     "prune": {"method": "structured", "sparsity": 0.25, "recovery": "distill"}},
    {"name": "magnitude 50% (unstructured)", "method": "prune", "prune": {"method": "magnitude", "sparsity": 0.5}},
]


def decode_speed(model: Any, vocab: int) -> dict[str, Any]:
    """Best-of-1-and-2-threads decode tokens/s at batch 1 and 8 with the loaded model's `generate`."""
    from llmforge.bench.measure import measure
    from llmforge.config import BenchOptions

    best: dict[str, tuple[float, int]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        options = BenchOptions(batch_sizes=[1, 8], new_tokens=32, repeats=3, warmup=1)
        result = measure(model, vocab, options)["decode_tokens_per_second"]
        for b, value in result.items():
            if value > best.get(b, (0.0, 0))[0]:
                best[b] = (value, threads)
    torch.set_num_threads(2)
    return {f"decode_b{b}": v for b, (v, _) in best.items()} | {f"threads_b{b}": t for b, (_, t) in best.items()}


def has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--quality-samples", type=int, default=200)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-compress")
    args = parser.parse_args()

    from llmforge.compress.runner import compress, load_variant
    from llmforge.config import CompressConfig, CompressOptions, ModelConfig
    from llmforge.models.loader import load_model

    parent_ref, data = args.runs / "train", args.runs / "prepare"
    if not (parent_ref / "manifest.json").is_file():
        sys.exit(f"no fine-tuned model at {parent_ref}: run `make demo` first")
    parent, tokenizer = load_model(ModelConfig(name_or_path=str(parent_ref)), merge_adapter=True)
    rows = [{"name": "fp32 (parent)", "size_bytes": sum(p.stat().st_size for p in
             (parent_ref / "model").glob("*.safetensors")), **decode_speed(parent, len(tokenizer))}]
    shutil.rmtree(args.work, ignore_errors=True)
    for spec in VARIANTS:
        spec = dict(spec)
        needs = spec.pop("needs", None)
        if needs and not has(needs):
            rows.append({"name": spec["name"], "skipped": f"{needs} not installed"})
            continue
        opts = CompressOptions(**spec, quality_samples=args.quality_samples, generate_samples=16)
        print(f"== {opts.name}", flush=True)
        result = compress(CompressConfig(model=ModelConfig(name_or_path=str(parent_ref)), data=data, compress=opts,
                                         output_dir=args.work / opts.name.replace(" ", "_").replace("%", "")))
        m = result.metrics
        model_dir = result.output_dir / json.loads((result.output_dir / "manifest.json").read_text())["model_dir"]
        if opts.method == "quantize" and opts.quantize.kernel == "torchao":
            from llmforge.compress.int8 import load_int8

            child = load_int8(model_dir, "torchao")
        else:
            child = load_variant(model_dir, ModelConfig(name_or_path=str(parent_ref)))
        rows.append({"name": opts.name, **{k: m.get(k) for k in (
            "size_bytes", "size_ratio", "parameters", "parameter_reduction", "perplexity", "parent_perplexity",
            "perplexity_change", "kl_divergence", "top1_agreement", "rougeL", "rougeL_vs_parent", "block_sparsity",
            "before_recovery")}, **decode_speed(child, len(tokenizer))})
    base = rows[0]
    for r in rows:
        if "decode_b1" in r:
            r["speedup_b1"] = r["decode_b1"] / base["decode_b1"]
            r["speedup_b8"] = r["decode_b8"] / base["decode_b8"]
    machine = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "processor": platform.processor(),
               "torch": torch.__version__}
    out = ROOT / "bench" / "results"
    (out / "compress.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    (out / "compress.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    head = ("variant", "size MB", "size", "perplexity", "vs fp32", "KL", "top-1", "decode tok/s b=1 (x fp32)",
            "b=8 (x fp32)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        lines.append("| " + " | ".join([
            r["name"], _f(r["size_bytes"] / 1e6, ".1f"), _f(r.get("size_ratio"), ".0%"), _f(r.get("perplexity"), ".2f"),
            _f(r.get("perplexity_change"), "+.1%"), _f(r.get("kl_divergence"), ".4f"), _f(r.get("top1_agreement"), ".1%"),
            f"{r['decode_b1']:,.0f} ({r['speedup_b1']:.2f}x)", f"{r['decode_b8']:,.0f} ({r['speedup_b8']:.2f}x)",
        ]) + " |")
    note = (f"\nPerplexity on held-out responses (parent: {rows[1].get('parent_perplexity', 0):.2f}); KL and top-1 "
            f"agreement against the fp32 parent's next-token distribution. CPU capability: "
            f"{machine['cpu_capability']}, torch {machine['torch']}.\n")
    return "\n".join(lines) + "\n" + note
if __name__ == "__main__":
    main()
