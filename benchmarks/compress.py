"""Compression: quality against the fp32 parent, size, and decode speed, on the demo model or a real one.

    python benchmarks/compress.py [runs/demo] [--quality-samples 200]                       # the demo's fine-tuned model
    python benchmarks/compress.py --model /tmp/smollm2-135m-instruct --data runs/x/prepare \
        --variants real --quality-samples 64 --exports --name compress-smollm2          # a real model

Every variant is made by `llmforge.compress` from the parent (by default the fine-tuned model of `make demo`,
runs/demo/train), reloaded from its files, and measured in this process the same way as the fp32 parent (the
baseline): held-out response perplexity, KL and top-1 agreement against the parent, file size, whether it passed
its quality gate, and greedy decode tokens/s with `model.generate` at batch 1 and 8 (128-token prompt, 32 new
tokens; prefill excluded; warm-up, median of 3). Both torch thread counts are tried for every model and the faster
is kept (small models often decode faster on one thread). torchao's int8 kernels are measured when torchao is
importable (`pip install 'llmforge[torchao]'`). `--exports` adds what users would run instead, scored on the same
held-out samples: ONNX Runtime int8 and llama.cpp GGUF q8_0 / q4_0 (needs llama-cpp-python), exported by
`llmforge.export` (whose quality gate is recorded too). Writes benchmarks/results/<name>.json and .md.
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

from llmforge.models.reference import artifact_bytes

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


# On a real model (SmolLM2-135M) int8 activation outliers matter; these rows show which fix does what.
REAL_VARIANTS: list[dict[str, Any]] = [
    {"name": "int8-dynamic (default)", "method": "quantize", "quantize": {"scheme": "int8-dynamic"}},
    {"name": "int8-dynamic, old default (per-tensor, SmoothQuant 0.5, head int8)", "method": "quantize",
     "quantize": {"scheme": "int8-dynamic", "activation_scales": "per-tensor", "weight_only": []}},
    {"name": "int8-dynamic, per-token, head int8", "method": "quantize",
     "quantize": {"scheme": "int8-dynamic", "weight_only": []}},
    {"name": "int8-weight-only", "method": "quantize", "quantize": {"scheme": "int8-weight-only"}},
]
EXPORTS = ("onnx-int8", "gguf-q8_0", "gguf-q4_0")


THREADS = (1, 2)


def decode_speed(model: Any, vocab: int) -> dict[str, Any]:
    """Best-of-THREADS decode tokens/s at batch 1 and 8 with the loaded model's `generate`."""
    from llmforge.bench.config import BenchOptions
    from llmforge.bench.measure import measure

    best: dict[str, tuple[float, int]] = {}
    for threads in THREADS:
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


def export_rows(parent_ref: Path, data: Path, held_out: Any, work: Path, parent: Any) -> list[dict[str, Any]]:
    """ONNX int8 and GGUF q8_0 / q4_0 of the parent, with held-out perplexity against it and decode speed."""
    from llmforge.compress.quality import compare_logits, torch_logits
    from llmforge.config import ModelConfig
    from llmforge.export.config import ExportConfig, ExportOptions
    from llmforge.export.runner import export
    from llmforge.models.decode import fastest, gguf_runtime, onnx_runtime

    formats = [f for f in EXPORTS if f.startswith("onnx") or has("llama_cpp")]
    result = export(ExportConfig(model=ModelConfig(name_or_path=str(parent_ref)), data=data,
                                 export=ExportOptions(formats=formats), output_dir=work / "export"))
    prompt = [t for ids in held_out["input_ids"] for t in ids][:128]
    rows = []
    for fmt, m in result.metrics["formats"].items():
        path = work / "export" / m["path"]
        logits, runtime = (_ort_logits(path), onnx_runtime) if fmt.startswith("onnx") else \
            (_gguf_logits(path), gguf_runtime)
        quality = compare_logits(torch_logits(parent), logits, held_out)
        speed = fastest(runtime, path, prompt, new_tokens=32, repeats=3, threads=THREADS)
        rows.append({"name": f"{fmt} (export)", "size_bytes": m["bytes"], **quality, "passed": m.get("passed"),
                     "gate_failures": m.get("gate_failures"), "parity_top1_agreement": m.get("top1_agreement"),
                     "parity_perplexity_change": m.get("perplexity_change"),
                     "max_abs_logits_diff": m.get("max_abs_logits_diff"),
                     "decode_b1": speed["tokens_per_second"], "threads_b1": speed["threads"]})
    return rows


def _ort_logits(path: Path) -> Any:
    from llmforge.models.ort import OrtCausalLM

    ort = OrtCausalLM.load(path)

    def fn(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*input_ids.shape, 0)
        for row, (ids, m) in enumerate(zip(input_ids, mask)):
            n = int(m.sum())
            logits = torch.from_numpy(ort.logits([ids[:n].tolist()])[0]).float()  # (n, V)
            if out.shape[-1] == 0:
                out = torch.zeros(*input_ids.shape, logits.shape[-1])  # (B, T, V); padding stays 0 (not scored)
            out[row, :n] = logits
        return out

    return fn


def _gguf_logits(path: Path) -> Any:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=2, logits_all=True, verbose=False)

    def fn(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*input_ids.shape, llm.n_vocab())  # (B, T, V)
        for row, (ids, m) in enumerate(zip(input_ids, mask)):
            n = int(m.sum())
            llm.reset()
            llm.eval(ids[:n].tolist())
            out[row, :n] = torch.from_numpy(np.asarray(llm.scores[:n], dtype=np.float32))
        return out

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=Path, default=ROOT / "runs" / "demo",
                        help="a `make demo` run (its train/ is the parent, prepare/ the data)")
    parser.add_argument("--model", type=Path, help="parent model dir or run dir (instead of RUNS/train)")
    parser.add_argument("--data", type=Path, help="prepared dataset run dir (instead of RUNS/prepare)")
    parser.add_argument("--variants", choices=("demo", "real"), default="demo")
    parser.add_argument("--exports", action="store_true", help="also ONNX int8 and GGUF q8_0/q4_0 of the parent")
    parser.add_argument("--name", default="compress", help="results file stem under benchmarks/results")
    parser.add_argument("--quality-samples", type=int, default=200)
    parser.add_argument("--generate-samples", type=int, default=16)
    parser.add_argument("--threads", default="1,2", help="torch thread counts tried for decode speed")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-compress")
    args = parser.parse_args()
    global THREADS
    THREADS = tuple(int(t) for t in args.threads.split(","))

    from llmforge.compress.config import CompressConfig, CompressOptions
    from llmforge.compress.runner import compress, load_variant
    from llmforge.config import ModelConfig
    from llmforge.data.splits import load_split
    from llmforge.models.loader import load_model

    parent_ref, data = args.model or args.runs / "train", args.data or args.runs / "prepare"
    if not (parent_ref / "config.json").is_file() and not (parent_ref / "manifest.json").is_file():
        sys.exit(f"no model at {parent_ref}: run `make demo` first, or pass --model")
    parent, tokenizer = load_model(ModelConfig(name_or_path=str(parent_ref)), merge_adapter=True)
    rows = [{"name": "fp32 (parent)", "size_bytes": artifact_bytes(str(parent_ref)),
             **decode_speed(parent, len(tokenizer))}]
    shutil.rmtree(args.work, ignore_errors=True)
    for spec in VARIANTS if args.variants == "demo" else REAL_VARIANTS:
        spec = dict(spec)
        needs = spec.pop("needs", None)
        if needs and not has(needs):
            rows.append({"name": spec["name"], "skipped": f"{needs} not installed"})
            continue
        opts = CompressOptions(**spec, quality_samples=args.quality_samples, generate_samples=args.generate_samples)
        print(f"== {opts.name}", flush=True)
        result = compress(CompressConfig(model=ModelConfig(name_or_path=str(parent_ref)), data=data, compress=opts,
                                         output_dir=args.work / _slug(opts.name)))
        m = result.metrics
        model_dir = result.output_dir / json.loads((result.output_dir / "manifest.json").read_text())["model_dir"]
        if opts.method == "quantize" and opts.quantize.kernel == "torchao":
            from llmforge.models.int8 import load_int8

            child = load_int8(model_dir, "torchao")
        else:
            child = load_variant(model_dir, ModelConfig(name_or_path=str(parent_ref)))
        rows.append({"name": opts.name, **{k: m.get(k) for k in (
            "size_bytes", "size_ratio", "parameters", "parameter_reduction", "perplexity", "parent_perplexity",
            "perplexity_change", "kl_divergence", "top1_agreement", "rougeL", "rougeL_vs_parent", "block_sparsity",
            "before_recovery", "passed", "gate_failures", "weight_only_layers", "activation_scales",
            "smoothquant_alpha", "sensitivity")}, **decode_speed(child, len(tokenizer))})
        del child
    if args.exports:
        held_out = load_split(data, "test")
        held_out = held_out.select(range(min(args.quality_samples, len(held_out))))
        rows.extend(export_rows(parent_ref, data, held_out, args.work, parent))
    base = rows[0]
    for r in rows:
        r["size_ratio"] = r["size_bytes"] / base["size_bytes"] if "size_bytes" in r else None
        for b in ("b1", "b8"):
            if f"decode_{b}" in r:
                r[f"speedup_{b}"] = r[f"decode_{b}"] / base[f"decode_{b}"]
    machine = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "processor": _cpu_name(),
               "torch": torch.__version__, "parent": str(parent_ref), "quality_samples": args.quality_samples,
               "threads": THREADS}
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.name}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    head = ("variant", "size MB", "size", "perplexity", "vs fp32", "KL", "top-1", "gate", "decode tok/s b=1 (x fp32)",
            "b=8 (x fp32)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        gate = {True: "pass", False: "FAIL", None: "-"}[r.get("passed")]
        lines.append("| " + " | ".join([
            r["name"], _f(r["size_bytes"] / 1e6, ".1f"), _f(r.get("size_ratio"), ".0%"), _f(r.get("perplexity"), ".3f"),
            _f(r.get("perplexity_change"), "+.1%"), _f(r.get("kl_divergence"), ".4f"), _f(r.get("top1_agreement"), ".1%"),
            gate, _speed(r, "b1"), _speed(r, "b8"),
        ]) + " |")
    parent_ppl = next((r["parent_perplexity"] for r in rows if r.get("parent_perplexity")), 0)
    note = (f"\nParent {machine.get('parent', '')}; perplexity on {machine.get('quality_samples', '')} held-out "
            f"responses (parent: {parent_ppl:.3f}); KL and top-1 agreement against the fp32 parent's next-token "
            f"distribution; gate: the variant's quality gate (perplexity change, top-1 agreement). CPU: "
            f"{machine.get('processor')} ({machine['cpu_capability']}), shared with other work; torch "
            f"{machine['torch']}.\n")
    sens = next((r["sensitivity"] for r in rows if r.get("sensitivity")), None)
    if sens:
        note += ("\nMost int8-sensitive layers (one layer int8 at a time, KL against the float model on "
                 "calibration samples):\n\n| layer | KL | top-1 | perplexity |\n|---|---|---|---|\n")
        note += "".join(f"| {s['layer']} | {s['kl_divergence']:.4f} | {s['top1_agreement']:.1%} | "
                        f"{s['perplexity_change']:+.2%} |\n" for s in sens[:12])
    return "\n".join(lines) + "\n" + note


def _speed(r: dict[str, Any], b: str) -> str:
    if f"decode_{b}" not in r:
        return "-"
    return f"{r[f'decode_{b}']:,.0f} ({r[f'speedup_{b}']:.2f}x)"


if __name__ == "__main__":
    main()
