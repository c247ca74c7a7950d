"""`llmforge serve` configured by environment, as the container image runs it: LLMFORGE_MODEL, LLMFORGE_HOST,
LLMFORGE_PORT, the API key from a mounted file (LLMFORGE_API_KEY_FILE) or LLMFORGE_API_KEY."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmforge.cli import app
from llmforge.errors import ConfigError

ENV = ["LLMFORGE_MODEL", "LLMFORGE_HOST", "LLMFORGE_PORT", "LLMFORGE_API_KEY", "LLMFORGE_API_KEY_FILE",
       "LLMFORGE_SERVED_MODEL_NAME", "LLMFORGE_MAX_MODEL_LEN"]


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import llmforge.serve.runner

    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    got: list[Any] = []
    monkeypatch.setattr(llmforge.serve.runner, "serve", got.append)
    return got


def test_environment_configures_serve(served: list[Any], tmp_path: Path) -> None:
    keys = tmp_path / "api_key"
    keys.write_text("key-one\n\n  key-two  \n")
    result = CliRunner().invoke(app, ["serve"], env={
        "LLMFORGE_MODEL": "demo /models/other", "LLMFORGE_HOST": "0.0.0.0", "LLMFORGE_PORT": "9001",
        "LLMFORGE_API_KEY": "env-key", "LLMFORGE_API_KEY_FILE": str(keys),
        "LLMFORGE_SERVED_MODEL_NAME": "a b", "LLMFORGE_MAX_MODEL_LEN": "512"})
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.models == {"a": "demo", "b": "/models/other"}
    assert (settings.host, settings.port, settings.max_model_len) == ("0.0.0.0", 9001, 512)
    assert settings.api_keys == ["env-key", "key-one", "key-two"]


def test_flags_win_over_environment(served: list[Any]) -> None:
    result = CliRunner().invoke(app, ["serve", "demo", "--port", "8100", "--api-key", "flag-key"],
                                env={"LLMFORGE_MODEL": "other", "LLMFORGE_PORT": "9001", "LLMFORGE_API_KEY": "env"})
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.models == {"demo": "demo"} and settings.port == 8100 and settings.api_keys == ["flag-key"]


def test_defaults_without_environment(served: list[Any]) -> None:
    result = CliRunner().invoke(app, ["serve", "demo"])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert (settings.host, settings.port, settings.api_keys) == ("127.0.0.1", 8000, [])


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_a_bad_key_file_is_named(served: list[Any], tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret" / "api_key"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    result = CliRunner().invoke(app, ["serve", "demo", "--api-key-file", str(path)])
    assert isinstance(result.exception, ConfigError)
    assert str(path) in str(result.exception)
    assert ("cannot read" if content is None else "holds no key") in str(result.exception)
    assert not served
