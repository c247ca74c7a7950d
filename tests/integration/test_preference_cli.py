"""Preference training through the real CLI: prepare prompt/chosen/rejected records, `train --method dpo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_jsonl
from tests.integration.test_cli import cli
from tests.unit.train.test_preference import preference_records

pytestmark = pytest.mark.integration


def test_dpo_through_the_cli_raises_the_held_out_reward_margin(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records())
    cli("prepare", "--data", str(data), "--model", str(tiny_model_dir), "--output", "prep",
        "--set", "data.split.validation=0.2", "--set", "data.split.test=0", cwd=tmp_path)
    cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--method", "dpo", "--output", "tuned",
        "--max-steps", "16", "--lr", "1e-2", "--set", "train.precision=fp32", cwd=tmp_path)
    metrics = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert metrics["eval_pairs"] == 16 and metrics["eval_reward_accuracy"] >= 0.9
    assert metrics["eval_reward_margin"] > 0.2
    assert metrics["eval_logp_margin"] > metrics["eval_logp_margin_before"] + 2
    manifest = json.loads((tmp_path / "tuned" / "manifest.json").read_text())
    assert (manifest["method"], manifest["weights"], manifest["adapter_dir"]) == ("dpo", "lora", "adapter")
    wrong = cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--output", "sft", "--max-steps", "1",
                cwd=tmp_path, check=False)
    assert wrong.returncode != 0 and "use train.method dpo, orpo or kto" in wrong.stderr
    assert "Traceback" not in wrong.stderr
