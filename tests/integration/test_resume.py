"""kill -9 in the middle of `llmforge train`, then `--resume`: the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import qa_records, write_jsonl
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration


def test_kill_9_then_resume_equals_uninterrupted(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(160))
    cli("prepare", "--data", str(data), "--model", str(tiny_model_dir), "--output", "prep", cwd=tmp_path)
    args = ["train", "--model", str(tiny_model_dir), "--data", "prep", "--method", "full", "--max-steps", "80",
            "--set", "train.save_steps=2", "--set", "train.batch_size=4", "--set", "train.logging_steps=10"]
    cli(*args, "--output", "whole", cwd=tmp_path)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmforge.cli", *args, "--output", "crashed"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "crashed.partial" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/llmforge-complete")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before a checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "crashed").exists(), "killed before finishing: nothing may look complete"

    cli(*args, "--output", "crashed", "--resume", cwd=tmp_path)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    assert resumed["train_steps"] == whole["train_steps"] == 80
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-5)
