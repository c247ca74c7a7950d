"""`llmforge compress` end to end on a tiny model: each method's artifact reloads in a fresh process and
generates, and its metrics are computed against the parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import generate_in_fresh_process
from tests.integration.test_cli import cli, prepared_workdir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress-cli")
    prepared_workdir(root, tiny_model_dir, 80)
    return root


def _metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


@pytest.mark.parametrize(("flags", "name"), [
    (["--scheme", "int8-dynamic"], "int8"),
    (["--scheme", "int8-weight-only"], "int8wo"),
    (["--scheme", "bf16"], "bf16"),
    (["--prune", "structured", "--sparsity", "0.25", "--recovery", "lora",
      "--set", "compress.prune.train.max_steps=2"], "structured"),
    (["--prune", "magnitude", "--sparsity", "0.5"], "magnitude"),
    (["--prune", "random", "--sparsity", "0.5"], "random"),
])
def test_each_method_reloads_in_a_fresh_process(tiny_model_dir: Path, workdir: Path, flags: list[str],
                                                 name: str) -> None:
    out = cli("compress", "--model", str(tiny_model_dir), "--data", "prep", "--output", name, *flags, cwd=workdir)
    assert "perplexity" in out.stdout
    metrics, manifest = _metrics(workdir / name), json.loads((workdir / name / "manifest.json").read_text())
    assert manifest["command"] == "compress" and manifest["method"] in ("quantize", "prune")
    for key in ("perplexity", "parent_perplexity", "kl_divergence", "top1_agreement", "rougeL", "size_bytes"):
        assert metrics[key] is not None, key
    assert not list((workdir / name).rglob("*.bin")) and not list((workdir / name).rglob("*.pt"))  # no pickle
    assert len(generate_in_fresh_process(workdir / name)) == 6
    if name == "int8":
        assert metrics["size_ratio"] <= 0.30
    if name in ("magnitude", "random"):
        assert metrics["block_sparsity"] == pytest.approx(0.5, abs=0.01)
        assert metrics["size_ratio"] == pytest.approx(1.0, abs=0.01) and "dense" in metrics["note"]
    if name == "structured":
        assert metrics["parameter_reduction"] > 0.1 and metrics["size_ratio"] < 0.9
        assert set(metrics["before_recovery"]) == {"perplexity", "kl_divergence", "top1_agreement"}


def test_gradual_pruning_keeps_its_zeros_through_fine_tuning(tiny_model_dir: Path, workdir: Path) -> None:
    cli("compress", "--model", str(tiny_model_dir), "--data", "prep", "--output", "gradual", "--prune", "gradual",
        "--sparsity", "0.5", "--set", "compress.prune.steps=2", "--set", "compress.prune.train.max_steps=3",
        cwd=workdir)
    metrics = _metrics(workdir / "gradual")
    assert [s["stage"] for s in metrics["schedule"]] == [1, 2]
    assert metrics["block_sparsity"] == pytest.approx(0.5, abs=0.01)  # fine-tuning did not refill the zeros


def test_cuda_only_schemes_say_so_on_cpu(tiny_model_dir: Path, workdir: Path) -> None:
    out = cli("compress", "--model", str(tiny_model_dir), "--scheme", "nf4", "--output", "nf4", cwd=workdir,
              check=False)
    assert out.returncode == 2 and "CUDA" in out.stderr + out.stdout
    assert not (workdir / "nf4").exists()
