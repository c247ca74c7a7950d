"""One MLflow registry (an embedded SQLite file) for the whole registry test session: opening a new store runs
MLflow's schema migrations (several seconds on a shared 2-core machine), so tests share it and each test registers
under its own model name. Run directories are written by llmforge.artifacts' own writer (real manifests)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="the registry needs the 'registry' extra (mlflow-skinny)")

_names = itertools.count(1)


@pytest.fixture(scope="session")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from llmforge.registry.store import client

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client(uri).search_registered_models()  # create the schema once
    return uri


@pytest.fixture()
def name() -> str:
    """A model name no other test uses."""
    return f"model-{next(_names)}"


def make_run(path: Path, weights: bytes, parents: list[Path] | None = None, loss: float = 1.0) -> Path:
    """A finished 'model' run: a model dir (config + weights; never loaded) and metrics, published by RunDir."""
    from llmforge.artifacts import RunDir

    with RunDir(path, kind="model", command="train", config={"train": {"method": "lora"}},
                parents=parents) as run:
        run.file("model/config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
        run.file("model/model.safetensors").write_bytes(weights)
        run.file("model/tokenizer.json").write_text("{}", encoding="utf-8")
        run.extra = {"model_dir": "model"}
        run.finish({"train_loss": loss, "eval": {"perplexity": 2.5}, "note": "text is not a metric"})
    return path


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    """Two finished runs, the second made from the first (lineage)."""
    first = make_run(tmp_path / "first", b"\x01" * 64, loss=1.5)
    second = make_run(tmp_path / "second", b"\x02" * 64, parents=[first], loss=1.2)
    return first, second
