"""Drive the real `llmforge` command end to end on a tiny model, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import qa_records, write_jsonl

pytestmark = pytest.mark.integration
LLMFORGE = [sys.executable, "-m", "llmforge.cli"]


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run([*LLMFORGE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"llmforge {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def prepared_workdir(root: Path, model: Path, records: int) -> Path:
    """`root` with QA records prepared for `model` by the real CLI into `root/prep`."""
    data = write_jsonl(root / "qa.jsonl", qa_records(records))
    cli("prepare", "--data", str(data), "--model", str(model), "--output", "prep", cwd=root)
    return root


def test_prepare_train_eval_with_flags(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(80))
    out = cli("prepare", "--data", str(data), "--model", str(tiny_model_dir), "--output", "prep",
              "--preview", "1", cwd=tmp_path)
    assert "records kept" in out.stdout and "sample 0" in out.stdout
    cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--method", "lora", "--output", "tuned",
        "--max-steps", "4", "--set", "train.merge=true", cwd=tmp_path)
    cli("eval", "--model", "tuned", "--data", "prep", "--output", "scored", cwd=tmp_path)
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert metrics["perplexity"] > 1 and metrics["tokens"] > 0
    manifest = json.loads((tmp_path / "scored" / "manifest.json").read_text())
    assert {p["kind"] for p in manifest["parents"]} == {"prepared-dataset", "model"}


def test_run_pipeline_from_yaml(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(80))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: t\noutput_dir: out\nmodel: {{name_or_path: {tiny_model_dir}}}\n"
        f"data: {{path: [{data}], split: {{validation: 0.1, test: 0.2}}}}\n"
        "train: {method: lora, max_steps: 3, merge: true}\n"
    )
    cli("run", str(config), cwd=tmp_path)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["base_perplexity"] > 0 and summary["finetuned_perplexity"] > 0
    for path in summary["artifacts"].values():
        assert (tmp_path / path / "manifest.json").exists()


def test_finetuned_output_loads_without_llmforge(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(40))
    cli("prepare", "--data", str(data), "--model", str(tiny_model_dir), "--output", "prep", cwd=tmp_path)
    cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--output", "tuned", "--max-steps", "2",
        "--set", "train.merge=true", cwd=tmp_path)
    script = (
        "import sys\n"
        "from peft import AutoPeftModelForCausalLM\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "for load, path in ((AutoPeftModelForCausalLM, 'tuned/adapter'), (AutoModelForCausalLM, 'tuned/model')):\n"
        "    tok = AutoTokenizer.from_pretrained(path)\n"
        "    model = load.from_pretrained(path)\n"
        "    prompt = tok.apply_chat_template([{'role': 'user', 'content': 'reverse: alpha beta'}],\n"
        "                                     add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)\n"
        "    assert out.shape[1] > prompt['input_ids'].shape[1]\n"
        "assert 'llmforge' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "train.learning_rat=1"], "unknown key 'train.learning_rat'"),
        (["--set", "train.method=qlorax"], "'train.method' = 'qlorax'"),
        (["--set", "nonsense"], "must look like key.path=value"),
    ],
)
def test_bad_config_is_one_short_error(args: list[str], expected: str, tmp_path: Path) -> None:
    result = cli("train", "--data", "missing", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 6


def test_missing_data_file_names_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = cli("prepare", "--data", "nope.jsonl", "--model", str(tiny_model_dir), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "nope.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_doctor_and_help(tmp_path: Path) -> None:
    assert "prepare" in cli("--help", cwd=tmp_path).stdout
    for command in ("prepare", "train", "eval", "run", "doctor", "demo"):
        assert "Usage" in cli(command, "--help", cwd=tmp_path).stdout
    assert "extras" in cli("doctor", cwd=tmp_path).stdout
