from __future__ import annotations

import json
from pathlib import Path

from llmforge.artifacts import RunDir
from llmforge.bench.compare import compare


def _compress_run(path: Path, name: str, ppl: float) -> Path:
    with RunDir(path, kind="model", command="compress", config={}) as run:
        run.finish({"variant": name, "size_bytes": 5e6, "size_ratio": 0.25, "parameters": 5.2e6, "perplexity": ppl,
                    "parent_perplexity": 39.0, "perplexity_change": ppl / 39.0 - 1, "kl_divergence": 0.0075,
                    "top1_agreement": 0.93})
    return path


def test_report_compares_compressed_variants(tmp_path: Path) -> None:
    runs = [_compress_run(tmp_path / "a", "int8", 39.2), _compress_run(tmp_path / "b", "pruned", 41.6)]
    out = compare(runs, tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "| int8 | 5.00 | 25% | 5.20 | 39.20 | 39.00 | +0.5% | 0.0075 | 93.0% | - | - |" in md
    assert "pruned" in md and "<table>" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text()) == {"variants": 2}
