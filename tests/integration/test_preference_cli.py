"""Preference training through the real CLI (prepare prompt/chosen/rejected records, `train --method dpo`, `llmforge run`)
and across two processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.config import ModelConfig, TrainOptions
from llmforge.train.config import TrainConfig
from llmforge.train.launch import launch
from llmforge.train.runner import train
from tests.helpers import write_jsonl
from tests.integration.test_cli import cli
from tests.unit.train.test_preference import pairs, preference_records  # noqa: F401 - pairs: a fixture

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


def test_llmforge_run_with_dpo_scores_pairs_not_perplexity(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The whole pipeline with a preference method: both evals score the pairs, the fine-tuned model's reward is
    measured against the base it was trained from (full weights: no adapter to turn off), and the summary and the
    terminal table say so; compress and export, which score perplexity, are refused up front."""
    pytest.importorskip("trl")
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records())
    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"name: pref\noutput_dir: out\nmodel: {{name_or_path: {tiny_model_dir}}}\n"
        f"data: {{path: [{data}], split: {{validation: 0.1, test: 0.2}}}}\n"
        "train: {method: dpo, max_steps: 12, learning_rate: 0.01, precision: fp32, preference: {weights: full}}\n")
    shown = cli("run", str(config), cwd=tmp_path).stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["eval_pairs"] == 16 and summary["reference"] == str(tiny_model_dir)
    assert "base_reward_accuracy" not in summary and summary["finetuned_reward_accuracy"] >= 0.9
    assert summary["finetuned_logp_margin"] > summary["base_logp_margin"]
    assert "reward accuracy" in shown and "preference pairs" in shown
    export = config.read_text() + "export: {formats: [onnx]}\n"
    config.write_text(export)
    refused = cli("run", str(config), cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "export.formats: a dpo pipeline" in refused.stderr


def test_two_process_dpo_equals_one_process(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:  # noqa: F811
    """DPO through TRL across two processes: the same global batch of pairs, the same loss and held-out reward."""
    pytest.importorskip("trl")
    opts = {"method": "dpo", "max_steps": 4, "learning_rate": 1e-2, "shuffle": False, "logging_steps": 1,
            "precision": "fp32"}
    model = ModelConfig(name_or_path=str(tiny_model_dir))
    one = train(TrainConfig(model=model, data=pairs, train=TrainOptions(batch_size=8, **opts),
                            output_dir=tmp_path / "one")).metrics
    cfg = TrainConfig(model=model, data=pairs, train=TrainOptions(batch_size=4, **opts), output_dir=tmp_path / "two")
    two = launch(cfg, nproc=2).metrics
    assert two["train_steps"] == one["train_steps"] == 4 and two["train_tokens"] == one["train_tokens"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert two["eval_reward_margin"] == pytest.approx(one["eval_reward_margin"], rel=1e-3)
