"""What the real CLI prints into a redirected log (issue #12 progress, #13.14 error messages)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import qa_records, write_jsonl

pytestmark = pytest.mark.integration


def logged(*args: str, cwd: Path, check: bool = True) -> str:
    """Run `llmforge ARGS > log 2>&1`, as a job on a server would, and return the log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMFORGE_PROGRESS_SECONDS": "0"}
    env.pop("COLUMNS", None)
    log = cwd / "log.txt"
    with log.open("w") as f:
        code = subprocess.run([sys.executable, "-m", "llmforge.cli", *args], cwd=cwd, stdout=f,
                              stderr=subprocess.STDOUT, env=env, timeout=600).returncode
    text = log.read_text()
    if check and code != 0:
        raise AssertionError(f"llmforge {' '.join(args)} failed ({code}):\n{text[-3000:]}")
    return text


def _last(text: str, phase: str) -> str:
    return [line for line in text.splitlines() if line.startswith(f"{phase}: ")][-1]


def test_long_stages_report_progress_lines_in_a_log(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(60))
    log = logged("prepare", "--data", str(data), "--model", str(tiny_model_dir), "--output", "prep",
                 "--set", "data.split.test=0.1", cwd=tmp_path)
    assert re.match(r"preparing \(render, tokenize, write\): 60/60 \(100%\) \| .+/s \| done in \d+s$",
                    _last(log, "preparing (render, tokenize, write)"))
    assert "\x1b[" not in log  # no terminal escapes in a log

    log = logged("train", "--model", str(tiny_model_dir), "--data", "prep", "--output", "tuned", "--max-steps", "3",
                 "--set", "train.merge=true", cwd=tmp_path)
    assert "training: started, 3 to do" in log
    assert re.search(r"^training: 1/3 \(33%\) \| .+/s \| elapsed \d+s \| ETA \d+s", log, re.M)
    assert _last(log, "training").startswith("training: 3/3 (100%)")

    log = logged("eval", "--model", "tuned", "--data", "prep", "--split", "test", "--generate", "2",
                 "--output", "scored", cwd=tmp_path)
    assert "perplexity: started, 6 to do" in log  # eval knows its total: 10% of 60
    assert _last(log, "perplexity").startswith("perplexity: 6/6 (100%)")
    assert _last(log, "generation").startswith("generation: 2/2 (100%)")
    assert "?" not in _last(log, "perplexity")


def test_errors_name_what_is_wrong(tiny_model_dir: Path, tmp_path: Path) -> None:
    log = logged("train", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing"), cwd=tmp_path,
                 check=False)
    assert f"{tmp_path / 'missing'} does not exist" in log and "Traceback" not in log

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text("{not json")
    log = logged("compress", "--model", str(broken), "--scheme", "int8-dynamic", cwd=tmp_path, check=False)
    assert f"{broken / 'config.json'}: not valid JSON" in log and "Traceback" not in log

    log = logged("compress", "--model", str(tiny_model_dir), "--scheme", "int8-static", "--output", "c",
                 cwd=tmp_path, check=False)
    assert "llmforge export -f onnx-int8-static" in log and "--quantize" not in log
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # the failed stage cleaned up


def test_run_help_describes_the_whole_pipeline(tmp_path: Path) -> None:
    log = logged("run", "--help", cwd=tmp_path)
    for stage in ("prepare", "train", "compress", "export", "summary.json"):
        assert stage in log
