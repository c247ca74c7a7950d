"""Write the README's results table from a finished demo run (never typed by hand).

    python bench/readme_results.py [runs/demo] [--total-seconds N]

Reads `runs/demo/summary.json` (written by `make demo`) and the shipped base model's provenance, and replaces
the block between `<!-- results:start -->` and `<!-- results:end -->` in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(summary: dict, provenance: dict, total_seconds: float | None) -> str:
    s = summary
    rows = [
        ("base model (pretrained by llmforge)", f"{provenance['total_parameters'] / 1e6:.1f}M params, "
         f"{provenance['pretrain_tokens'] / 1e6:.1f}M stdlib tokens, {provenance['pretrain_steps']} steps"),
        ("fine-tuning samples (train / validation / test)",
         " / ".join(f"{s['samples'][k]:,}" for k in ("train", "validation", "test"))),
        (f"held-out perplexity, base ({s['scored_tokens']:,} response tokens)", f"{s['base_perplexity']:.2f}"),
        ("held-out perplexity, LoRA fine-tuned", f"{s['finetuned_perplexity']:.2f}"),
        ("perplexity reduction (target > 15%)", f"**{s['perplexity_reduction']:.1%}**"),
        ("LoRA training throughput", f"{s['train_tokens_per_second']:,.0f} tokens/s"),
        ("LoRA training time", f"{s['train_runtime_seconds']:.0f} s"),
        ("pipeline time (prepare, 2 evals, train)", f"{s['wall_seconds']:.0f} s"),
    ]
    if total_seconds is not None:
        rows.append(("`make demo` wall time (install included)", f"**{total_seconds / 60:.1f} min**"))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Demo results ({machine}; written by `bench/readme_results.py` from `runs/demo/summary.json`):", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--total-seconds", type=float, default=None, help="measured `make demo` wall time")
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "summary.json").read_text())
    provenance = json.loads((ROOT / "src/llmforge/assets/demo-base/provenance.json").read_text())
    readme = ROOT / "README.md"
    block = f"<!-- results:start -->\n{table(summary, provenance, args.total_seconds)}\n<!-- results:end -->"
    text = re.sub(r"<!-- results:start -->.*?<!-- results:end -->", lambda _: block, readme.read_text(), flags=re.S)
    readme.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
