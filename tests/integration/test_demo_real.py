"""`llmforge demo --real`'s whole flow (tasks, LoRA, functional and probe scoring, summary) on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_real_demo_end_to_end_on_a_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real demo's whole flow on the tiny test model: every number it promises lands in summary.json."""
    from llmforge.config import TrainOptions
    from llmforge.demo import real_demo_config, real_rows, run_real_demo

    cfg = real_demo_config(tmp_path / "run", model=str(tiny_model_dir))
    cfg = cfg.model_copy(update={
        "train": TrainOptions(method="lora", max_steps=2, batch_size=4, merge=True),
        "eval": cfg.eval.model_copy(update={"max_new_tokens": 8, "batch_size": 8}),
    })
    summary = run_real_demo(cfg, tasks={"max_train": 12, "max_validation": 2, "max_test": 4})
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    code, probe = summary["code_tasks"], summary["general_probe"]
    assert code["held_out_tasks"] == 4 and code["tests_per_task"] > 1
    assert 0 <= code["base_pass_rate"] <= 1 and 0 <= code["finetuned_pass_rate"] <= 1
    assert sum(code["base_statuses"].values()) == sum(code["finetuned_statuses"].values()) == 4
    assert probe["items"] > 0 and probe["score_change"] == probe["finetuned_score"] - probe["base_score"]
    assert set(summary["targets"]) == {"perplexity_reduction_at_least_15pct", "pass_rate_improved",
                                       "general_ability_kept"}
    assert summary["targets_met"] == all(summary["targets"].values())
    for label in ("base", "finetuned"):
        scored = json.loads((tmp_path / "run" / f"functional-{label}.json").read_text())
        assert len(scored["code"]["results"]) == 4 and all("answer" in r for r in scored["code"]["results"])
    assert len(real_rows(summary)) == 3
