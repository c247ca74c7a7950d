"""Export formats on the demo fine-tuned model: batch-1 decode speed and file size against PyTorch fp32.

    python bench/export.py [runs/demo]

The model of `make demo` (runs/demo/train) is exported by `llmforge.export` (ONNX fp32 and int8, GGUF), each
format parity-checked on the way. Then every artifact generates greedily in this process from the same
128-token prompt: 64 new tokens, decode rate = 63 / (time for 64 tokens - time for 1 token), so prefill is not
counted; 2 warm-up runs, median of 5. The baseline is PyTorch fp32 with transformers' `generate` and its KV cache.
Each runtime is tried with 1 and 2 threads and keeps its faster setting. GGUF runs through llama-cpp-python
when it is installed (`pip install 'llmforge[llamacpp]'`, a ~13 min compile); otherwise its rows say so.
Writes bench/results/export.json and bench/results/export.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT, NEW, REPEATS, WARMUP = 128, 64, 5, 2
FORMATS = ["onnx", "onnx-int8", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]


def rate(generate: Callable[[int], Any]) -> float:
    """Decode tokens/s of `generate(n)`, which produces n new tokens for the fixed prompt."""
    def timed(n: int) -> float:
        for _ in range(WARMUP):
            generate(n)
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            generate(n)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return (NEW - 1) / max(timed(NEW) - timed(1), 1e-9)


def pytorch(model_dir: Path, prompt: list[int], threads: int) -> float:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = torch.tensor([prompt])

    def generate(n: int) -> None:
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    return rate(generate)


def onnx(directory: Path, prompt: list[int], threads: int) -> float:
    from llmforge.export.ort_runtime import OrtCausalLM

    ort = OrtCausalLM.load(directory, threads=threads)
    return rate(lambda n: ort.generate([prompt], n))  # no eos: always n tokens


def gguf(path: Path, prompt: list[int], threads: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=threads, n_batch=512, verbose=False)

    def generate(n: int) -> None:
        llm.reset()
        llm.eval(prompt)
        for _ in range(n - 1):
            llm.eval([int(np.argmax(llm._ctx.get_logits_ith(-1)[: llm.n_vocab()]))])

    try:
        return rate(generate)
    finally:
        llm.close()


def best(fn: Callable[..., float], *args: Any) -> tuple[float, int]:
    return max((fn(*args, t), t) for t in (1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-export")
    args = parser.parse_args()

    from llmforge.config import ExportConfig, ExportOptions, ModelConfig
    from llmforge.export.runner import export

    model_dir = args.runs / "train" / "model"
    if not (model_dir / "config.json").is_file():
        sys.exit(f"no merged fine-tuned model at {model_dir}: run `make demo` first")
    result = export(ExportConfig(model=ModelConfig(name_or_path=str(model_dir)), data=args.runs / "prepare",
                                 export=ExportOptions(formats=FORMATS, threads=1), output_dir=args.work))
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(8, 8000, (PROMPT,), generator=g).tolist()
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    speed, threads = best(pytorch, model_dir, prompt)
    rows = [{"format": "PyTorch fp32 (transformers generate)", "bytes": size, "decode_b1": speed, "threads": threads,
             "parity": "reference"}]
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
    for fmt, m in result.metrics["formats"].items():
        path = args.work / m["path"]
        row = {"format": fmt, "bytes": m["bytes"], "parity": m.get("passed"),
               "max_abs_logits_diff": m.get("max_abs_logits_diff"), "top1_agreement": m.get("top1_agreement")}
        if fmt.startswith("onnx"):
            row["decode_b1"], row["threads"] = best(onnx, path, prompt)
        elif have_llama:
            row["decode_b1"], row["threads"] = best(gguf, path, prompt)
        else:
            row["skipped"] = "llama-cpp-python not installed"
        rows.append(row)
    for r in rows:
        r["size_ratio"] = r["bytes"] / size
        if "decode_b1" in r:
            r["speedup"] = r["decode_b1"] / rows[0]["decode_b1"]
    out = ROOT / "bench" / "results"
    (out / "export.json").write_text(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "rows": rows},
                                                indent=1) + "\n")
    (out / "export.md").write_text(markdown(rows))
    print(markdown(rows))


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("format", "size MB", "size vs fp32", "decode tok/s (b=1)", "speed vs fp32", "threads", "parity",
            "max abs logits diff", "top-1 agreement")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        parity = {True: "pass", False: "FAIL", None: "not measured"}.get(r["parity"], r["parity"])
        speed = (f"{r['decode_b1']:,.0f}", f"{r['speedup']:.2f}x", str(r["threads"])) if "decode_b1" in r \
            else (r.get("skipped", "-"), "-", "-")
        diff = "-" if r.get("max_abs_logits_diff") is None else f"{r['max_abs_logits_diff']:.2g}"
        top1 = "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.1%}"
        lines.append(f"| {r['format']} | {r['bytes'] / 1e6:.1f} | {r['size_ratio']:.0%} | {speed[0]} | {speed[1]} | "
                     f"{speed[2]} | {parity} | {diff} | {top1} |")
    return "\n".join(lines) + (f"\n\nBatch 1, greedy, {PROMPT}-token prompt, {NEW} new tokens, prefill excluded; "
                               f"median of {REPEATS} after {WARMUP} warm-up runs, best of 1 and 2 threads.\n")


if __name__ == "__main__":
    main()
