"""`llmforge report RUN_DIR...`: put the variants of several bench runs into one report."""

from __future__ import annotations

import json
from pathlib import Path

from llmforge.artifacts import RunDir, read_manifest
from llmforge.bench.report import write_report
from llmforge.errors import LlmforgeError


def compare(runs: list[Path], output: Path) -> Path:
    variants, bandwidths = [], []
    for run in runs:
        manifest = read_manifest(run)
        if manifest.get("kind") != "bench":
            raise LlmforgeError(f"{run} is a '{manifest.get('kind')}' run; `llmforge report` compares bench runs")
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
