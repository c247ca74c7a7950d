"""`llmforge report RUN_DIR...`: put the variants of several bench runs into one report, or compare compressed
variants (`llmforge compress` runs) by size and quality against their parents."""

from __future__ import annotations

import json
from pathlib import Path

from llmforge.artifacts import RunDir, read_manifest
from llmforge.bench.report import write_report
from llmforge.errors import LlmforgeError

QUALITY = (("variant", "variant", "{}"), ("size MB", "size_bytes", "{:.2f}"), ("size", "size_ratio", "{:.0%}"),
           ("parameters M", "parameters", "{:.2f}"), ("perplexity", "perplexity", "{:.2f}"),
           ("parent perplexity", "parent_perplexity", "{:.2f}"), ("vs parent", "perplexity_change", "{:+.1%}"),
           ("KL", "kl_divergence", "{:.4f}"), ("top-1 agreement", "top1_agreement", "{:.1%}"),
           ("ROUGE-L", "rougeL", "{:.3f}"), ("ROUGE-L vs parent", "rougeL_vs_parent", "{:.3f}"))


def _cell(metrics: dict, key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    return fmt.format(value / 1e6 if key in ("size_bytes", "parameters") else value)


def quality_tables(runs: list[Path]) -> tuple[str, str]:
    """(markdown, html) tables of compressed variants' size and quality against their parents."""
    import html

    rows = [[_cell(json.loads((Path(r) / "metrics.json").read_text()), key, fmt) for _, key, fmt in QUALITY]
            for r in runs]
    head = [name for name, _, _ in QUALITY]
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                   ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    page = ("<!doctype html><html lang=en><head><meta charset=utf-8><title>llmforge compressed variants</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
            "<h1>Compressed variants against their parents</h1><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{cells}</table></body></html>")
    return md, page


def compare(runs: list[Path], output: Path) -> Path:
    kinds = {read_manifest(r).get("command") for r in runs}
    if kinds == {"compress"}:
        md, page = quality_tables(runs)
        with RunDir(output, kind="report", command="report", config={"runs": [str(r) for r in runs]},
                    parents=list(runs)) as out:
            (out.staging / "report.md").write_text(md, encoding="utf-8")
            (out.staging / "report.html").write_text(page, encoding="utf-8")
            out.finish({"variants": len(runs)})
        return output
    variants, bandwidths = [], []
    for run in runs:
        manifest = read_manifest(run)
        if manifest.get("kind") != "bench":
            raise LlmforgeError(f"{run} is a '{manifest.get('kind')}' run; `llmforge report` compares bench runs, "
                                "or compress runs (not both at once)")
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        for v in metrics["variants"]:
            variants.append({**v, "name": f"{v['name']} ({Path(run).name})" if len(runs) > 1 else v["name"]})
        bandwidths.append(metrics["machine"]["read_bandwidth_gbps"])
    machine = {"read_bandwidth_gbps": max(bandwidths)}
    with RunDir(output, kind="report", command="report", config={"runs": [str(r) for r in runs]},
                parents=list(runs)) as out:
        write_report(variants, machine, out.staging)
        out.finish({"variants": len(variants)})
    return output
