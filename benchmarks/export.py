"""Export formats on the demo fine-tuned model: batch-1 decode speed and file size against PyTorch fp32.

    python benchmarks/export.py [runs/demo]

The model of `make demo` (runs/demo/train) is exported by `llmforge.export` (ONNX fp32 and int8, GGUF), each
format parity-checked on the way. Then every artifact generates greedily in this process from the same
128-token prompt: 64 new tokens, decode rate = 63 / (time for 64 tokens - time for 1 token), so prefill is not
counted; 2 warm-up runs, median of 5. The baseline is PyTorch fp32 with transformers' `generate` and its KV cache.
Each runtime is tried with 1 and 2 threads and keeps its faster setting. GGUF runs through llama-cpp-python
when it is installed (`pip install 'llmforge[llamacpp]'`, a ~13 min compile); otherwise its rows say so.
Writes benchmarks/results/export.json and benchmarks/results/export.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT, NEW, REPEATS = 128, 64, 5
FORMATS = ["onnx", "onnx-int8", "onnx-int8-static", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-export")
    args = parser.parse_args()

    from llmforge.config import ModelConfig
    from llmforge.export.config import ExportConfig, ExportOptions
    from llmforge.export.runner import export
    from llmforge.models.decode import fastest, gguf_runtime, onnx_runtime, pytorch_runtime

    model_dir = args.runs / "train" / "model"
    if not (model_dir / "config.json").is_file():
        sys.exit(f"no merged fine-tuned model at {model_dir}: run `make demo` first")
    result = export(ExportConfig(model=ModelConfig(name_or_path=str(model_dir)), data=args.runs / "prepare",
                                 export=ExportOptions(formats=FORMATS, threads=1), output_dir=args.work))
    prompt = torch.randint(8, 8000, (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    print("== PyTorch fp32", flush=True)
    rows = [{"format": "PyTorch fp32 (transformers generate)", "bytes": size, "parity": "reference",
             **fastest(pytorch_runtime, model_dir, prompt, NEW, REPEATS)}]
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
    for fmt, m in result.metrics["formats"].items():
        print(f"== {fmt}", flush=True)
        row = {"format": fmt, "bytes": m["bytes"], "parity": m.get("passed"),
               "max_abs_logits_diff": m.get("max_abs_logits_diff"), "top1_agreement": m.get("top1_agreement"),
               "greedy_identical": m.get("greedy_identical")}
        if fmt.startswith("onnx"):
            row.update(fastest(onnx_runtime, args.work / m["path"], prompt, NEW, REPEATS))
        elif have_llama:
            row.update(fastest(gguf_runtime, args.work / m["path"], prompt, NEW, REPEATS))
        else:
            row["skipped"] = "llama-cpp-python not installed"
        rows.append(row)
    for r in rows:
        r["size_ratio"] = r["bytes"] / size
        if "tokens_per_second" in r:
            r["speedup"] = r["tokens_per_second"] / rows[0]["tokens_per_second"]
    out = ROOT / "benchmarks" / "results"
    (out / "export.json").write_text(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "rows": rows},
                                                indent=1) + "\n")
    (out / "export.md").write_text(markdown(rows))
    print(markdown(rows))


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("format", "size MB", "size vs fp32", "decode tok/s (b=1)", "speed vs fp32", "threads", "parity",
            "max abs logits diff", "top-1 agreement", "greedy identical")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        parity = {True: "pass", False: "FAIL", None: "not measured"}.get(r["parity"], r["parity"])
        speed = (f"{r['tokens_per_second']:,.0f}", f"{r['speedup']:.2f}x", str(r["threads"])) \
            if "tokens_per_second" in r else (r.get("skipped", "-"), "-", "-")
        diff = "-" if r.get("max_abs_logits_diff") is None else f"{r['max_abs_logits_diff']:.2g}"
        top1 = "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.1%}"
        greedy = {True: "yes", False: "no", None: "-"}[r.get("greedy_identical")]
        lines.append(f"| {r['format']} | {r['bytes'] / 1e6:.1f} | {r['size_ratio']:.0%} | {speed[0]} | {speed[1]} | "
                     f"{speed[2]} | {parity} | {diff} | {top1} | {greedy} |")
    return "\n".join(lines) + (f"\n\nBatch 1, greedy, {PROMPT}-token prompt, {NEW} new tokens, prefill excluded; "
                               f"median of {REPEATS} after 2 warm-up runs, best of 1 and 2 threads. Parity: max "
                               "|logits difference| and top-1 agreement against PyTorch on held-out prompts, greedy "
                               "tokens compared for 32 steps, tokenization on a unicode and special-token corpus.\n")


if __name__ == "__main__":
    main()
