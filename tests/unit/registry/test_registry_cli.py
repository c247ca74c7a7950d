"""`llmforge registry` through typer's CliRunner: the store from LLMFORGE_REGISTRY_URI, as a user sets it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llmforge.cli import app
from llmforge.errors import LlmforgeError


def test_register_promote_show_verify_rollback(runs: tuple[Path, Path], name: str, registry_uri: str) -> None:
    runner = CliRunner()
    env = {"LLMFORGE_REGISTRY_URI": registry_uri, "COLUMNS": "200"}

    def cli(*args: str) -> object:
        return runner.invoke(app, ["registry", *args], env=env)

    for run in runs:
        result = cli("register", str(run), "--name", name)
        assert result.exit_code == 0, result.output
    assert f"registered registry:{name}@2: {runs[1].resolve()}" in result.output
    result = cli("promote", f"{name}@2", "--to", "production", "-m", "better loss")
    assert result.exit_code == 0 and f"{name}: production -> version 2" in result.output
    assert "better loss" in result.output
    result = cli("list")
    assert result.exit_code == 0 and name in result.output
    result = cli("show", f"{name}@production")
    assert result.exit_code == 0 and str(runs[1].resolve()) in result.output and "train_loss" in result.output
    result = cli("verify", f"{name}@2")
    assert result.exit_code == 0 and result.output.startswith(f"ok: registry:{name}@2")

    (runs[1] / "metrics.json").write_text("{}")
    result = cli("verify", name)
    assert result.exit_code == 1 and "changed: metrics.json" in result.output

    result = cli("rollback", name)
    assert isinstance(result.exception, LlmforgeError)  # main() prints it as one paragraph, exit 2
    assert "nothing to roll back to: only version 2 has held it" in str(result.exception)
