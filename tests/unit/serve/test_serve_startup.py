"""Issue #13 items 5 and 9: every model loads before the port is bound, so a missing directory, a corrupt
safetensors file or a garbage config.json is one error naming the file and no server ever answers /health;
`serve_check` does not count a missing log as a clean drain."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from llmforge.errors import LlmforgeError
from llmforge.serve.check import _drained
from llmforge.serve.runner import serve
from llmforge.serve.settings import ServeSettings


@pytest.fixture()
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn started although a model could not be loaded")

    monkeypatch.setattr(uvicorn.Server, "run", run)


def broken_copies(tiny_model_dir: Path, root: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (model ref, the file the error must name)."""
    weights = root / "weights"
    config = root / "config"
    shutil.copytree(tiny_model_dir, weights)
    shutil.copytree(tiny_model_dir, config)
    (weights / "model.safetensors").write_bytes(b"\x00" * 7 + b"garbage")
    (config / "config.json").write_text("{garbage", encoding="utf-8")
    missing = root / "does" / "not" / "exist"
    return {"missing": (missing, missing), "weights": (weights, weights / "model.safetensors"),
            "config": (config, config / "config.json")}


def test_a_model_that_cannot_load_stops_serve_before_the_port_is_bound(tiny_model_dir: Path, tmp_path: Path,
                                                                      no_uvicorn: None) -> None:
    for name, (ref, named) in broken_copies(tiny_model_dir, tmp_path).items():
        settings = ServeSettings(models={"m": str(ref)}, port=0, device="cpu")
        with pytest.raises(LlmforgeError) as err:
            serve(settings)
        message = str(err.value)
        assert str(named) in message and "\n" not in message, (name, message)
        assert "Repo id" not in message and "huggingface" not in message.lower(), message


def test_drained_needs_a_log_that_says_so(tmp_path: Path) -> None:
    assert not _drained(None)
    log = tmp_path / "serve.log"
    log.write_text('{"message": "Waiting for application shutdown."}\n')
    assert not _drained(log)
    log.write_text('{"message": "Application shutdown complete."}\n')
    assert _drained(log)
