"""`eval --rag` on the real model: does retrieval find the passage, and does SmolLM2 answer better with it?

    python benchmarks/rag_eval.py [--model smollm2-135m-instruct] [--questions 48] [--k 4]

The index: `llmforge rag index` (its defaults: 200-token chunks, overlap 40) over the source files of a dozen
standard-library modules, built in a temporary directory. The questions: those `eval --rag` derives from the
index's Python files ("What does `statistics.median_low` do?", answered by the first sentence of its docstring,
drawn with seed 0), answered by the model with the top-k passages in the chat (as `serve --rag` puts them) and
without. Scored as `eval --rag` scores them (llmforge.eval.rag): hit rate@k and MRR@k on the source file, and
answer recall (the share of the reference's 4+-letter words the answer has) and ROUGE-L.

The derived questions name the function, which the chunk's text also holds, so finding the file is easy for
them; a second, harder retrieval set asks with the docstring's first sentence and no name ("described"), and
measures retrieval alone. Writes benchmarks/results/rag_eval.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("json", "csv", "textwrap", "shlex", "difflib", "heapq", "bisect", "statistics", "fractions", "string",
           "calendar", "base64", "shutil", "fnmatch")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def module_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for name in MODULES:
        package = stdlib / name
        files += sorted(package.glob("*.py")) if package.is_dir() else [stdlib / f"{name}.py"]
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a model llmforge resolves (name or directory)")
    ap.add_argument("--questions", type=int, default=48)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()

    from llmforge.eval.rag import docstring_qa, index_python_files, rag_metrics
    from llmforge.models.reference import resolve_ref
    from llmforge.models.runtimes import load_runtime
    from llmforge.rag import RagIndexConfig, build_index, load_index
    from llmforge.rag.quality import RetrievalCase, retrieval_quality

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        built = build_index(RagIndexConfig(docs=module_files(), output=Path(tmp) / "index"))
        index_s = time.perf_counter() - t
        index = load_index(built.output_dir)
        cases = docstring_qa(index_python_files(index), args.questions)
        described = retrieval_quality(index, [RetrievalCase(c["answer"], c["source"]) for c in cases], args.k)

        ref = resolve_ref(args.model)
        runtime, tokenizer = load_runtime(ref, context=4096)
        t = time.perf_counter()
        metrics, records = rag_metrics(runtime, tokenizer, index, cases, args.k)
        answer_s = time.perf_counter() - t

    k = args.k
    result = {
        "setup": {"model": args.model, "runtime": ref.runtime, "modules": list(MODULES),
                  "index": {key: built.metrics[key] for key in ("files", "chunks", "tokens")},
                  "index_seconds": round(index_s, 1), "answer_seconds": round(answer_s, 1),
                  "questions": len(cases), "top_k": k, "cpu": cpu_model()},
        "named": {key: metrics[key] for key in (f"hit_rate@{k}", f"mrr@{k}")},
        "described": {key: described[key] for key in (f"hit_rate@{k}", f"mrr@{k}")},
        "with_rag": metrics["with_rag"], "without_rag": metrics["without_rag"],
        "samples": records[:6],
    }
    out = ROOT / "benchmarks" / "results" / "rag_eval.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"{args.model}: {len(cases)} derived questions over {built.metrics['chunks']} chunks "
          f"({len(MODULES)} stdlib modules), top {k}")
    print(f"retrieval, named function:   hit rate {metrics[f'hit_rate@{k}']:.3f}  MRR {metrics[f'mrr@{k}']:.3f}")
    print(f"retrieval, described only:   hit rate {described[f'hit_rate@{k}']:.3f}  MRR {described[f'mrr@{k}']:.3f}")
    for name in ("without_rag", "with_rag"):
        m = metrics[name]
        print(f"answers {name.replace('_', ' '):<12} answer recall {m['answer_recall']:.3f}  ROUGE-L {m['rougeL']:.3f}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
