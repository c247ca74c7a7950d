"""The retrain section and its promotion gate (pure: metrics dicts in, gate lines out), the refusal decision on a
real MLflow store, and how retrain finds the data and base a registered version was trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge import registry
from llmforge.artifacts import RunDir
from llmforge.errors import ConfigError, LlmforgeError
from llmforge.registry.gate import PromotionGate
from llmforge.stages import load_config
from tests.unit.registry.conftest import make_run

PRODUCTION = {"perplexity": 10.0, "rougeL": 0.50, "harness": {"arc": {"acc": 0.40}}}


def _lines(gate: PromotionGate, candidate: dict, export: dict | None = None) -> dict[str, dict]:
    return {line["line"]: line for line in gate.check(candidate, PRODUCTION, export)}


def test_perplexity_line_measures_the_improvement_in_percent() -> None:
    gate = PromotionGate(min_perplexity_improvement_pct=5)
    better = _lines(gate, {"perplexity": 9.4})["min_perplexity_improvement_pct"]
    assert better["passed"] and better["measured"] == pytest.approx(6.0)
    worse = _lines(gate, {"perplexity": 9.6})["min_perplexity_improvement_pct"]
    assert not worse["passed"] and worse["measured"] == pytest.approx(4.0)
    assert "10 -> 9.6" in worse["detail"] and "< 5% required" in worse["detail"]
    tolerant = PromotionGate(min_perplexity_improvement_pct=-3)  # up to 3% worse is accepted
    assert _lines(tolerant, {"perplexity": 10.2})["min_perplexity_improvement_pct"]["passed"]


def test_metric_drop_lines_name_the_metric_and_the_numbers() -> None:
    gate = PromotionGate(max_metric_drop={"rougeL": 0.05, "harness.arc.acc": 0.0})
    lines = _lines(gate, {"perplexity": 9.0, "rougeL": 0.44, "harness": {"arc": {"acc": 0.41}}})
    assert not lines["max_metric_drop.rougeL"]["passed"]
    assert lines["max_metric_drop.rougeL"]["measured"] == pytest.approx(0.06)
    assert lines["max_metric_drop.harness.arc.acc"]["passed"]  # it rose
    equal = _lines(PromotionGate(max_metric_drop={"rougeL": 0.1}), {"perplexity": 9.0, "rougeL": 0.4})
    assert equal["max_metric_drop.rougeL"]["passed"]  # a drop exactly at the limit passes
    missing = _lines(PromotionGate(max_metric_drop={"exact_match": 0.0}), {"perplexity": 9.0})
    assert not missing["max_metric_drop.exact_match"]["passed"]
    assert "not measured" in missing["max_metric_drop.exact_match"]["detail"]


def test_export_fidelity_needs_every_format_to_pass_its_parity_gate() -> None:
    gate = PromotionGate(export_fidelity=True)
    ok = {"onnx": {"passed": True}, "onnx-int8": {"passed": True}}
    assert _lines(gate, {"perplexity": 9.0}, ok)["export_fidelity"]["passed"]
    bad = {"onnx": {"passed": True}, "onnx-int8": {"passed": False, "gate_failures": ["perplexity +9.0% > +5.0%"]}}
    line = _lines(gate, {"perplexity": 9.0}, bad)["export_fidelity"]
    assert not line["passed"] and "onnx-int8: perplexity +9.0% > +5.0%" in line["detail"]
    unmeasured = {"gguf-f16": {"passed": None, "llama_cpp": "not installed"}}
    assert not _lines(gate, {"perplexity": 9.0}, unmeasured)["export_fidelity"]["passed"]
    assert "export_fidelity" not in _lines(PromotionGate(), {"perplexity": 9.0})  # off by default


def test_retrain_section_reads_from_and_refuses_lower_is_better_metrics(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("retrain:\n  registry: demo\n  from: base\n  old_data_fraction: 0.25\n"
                    "  gate: {max_metric_drop: {rougeL: 0.02}}\n")
    cfg = load_config(path, ["retrain.gate.min_perplexity_improvement_pct=2"])
    assert cfg.retrain.from_ == "base" and cfg.retrain.old_data_fraction == 0.25
    assert cfg.retrain.gate.min_perplexity_improvement_pct == 2
    assert cfg.retrain.model_dump(mode="json")["from"] == "base"  # written back as the YAML key
    assert load_config(None, ["retrain.from=production"]).retrain.from_ == "production"
    with pytest.raises(ConfigError, match="perplexity has its own line"):
        load_config(None, ["retrain.gate.max_metric_drop={perplexity: 1}"])
    with pytest.raises(ConfigError, match="retrain.from"):
        load_config(None, ["retrain.from=latest"])
    with pytest.raises(ConfigError, match=r"unknown key 'retrain.frm'; allowed here: from, gate, old_data_fraction"):
        load_config(None, ["retrain.frm=base"])
    with pytest.raises(ConfigError, match="old_data_fraction"):
        load_config(None, ["retrain.old_data_fraction=1.5"])


def test_a_refusal_is_recorded_and_moves_no_alias(runs: tuple[Path, Path], name: str, registry_uri: str) -> None:
    first, second = runs
    registry.register(first, name, uri=registry_uri)
    registry.promote(name, 1, uri=registry_uri)
    registry.register(second, name, uri=registry_uri)
    refused = registry.refuse(name, 2, 1, reason="retrain gate failed (min_perplexity_improvement_pct)",
                              uri=registry_uri)
    assert (refused.action, refused.alias, refused.version, refused.previous) == ("refuse", None, 2, 1)
    assert registry.model_info(name, registry_uri).aliases == {"production": 1}
    registry.promote(name, 2, uri=registry_uri)
    assert registry.rollback(name, uri=registry_uri).version == 1  # the refusal is not a step of the stack


def _prepared(path: Path) -> Path:
    with RunDir(path, kind="prepared-dataset", command="prepare", config={}, dataset_fingerprint="f") as run:
        run.file("train/dataset_info.json").write_text("{}", encoding="utf-8")
        run.finish({})
    return path


def _trained(path: Path, parents: list[Path], base: str | None = "/models/base") -> Path:
    with RunDir(path, kind="model", command="train", config={}, parents=parents) as run:
        run.file("model/config.json").write_text("{}", encoding="utf-8")
        run.extra = {"model_dir": "model", **({"base_model": base} if base else {})}
        run.finish({})
    return path


def test_retrain_finds_the_training_data_through_the_lineage(tmp_path: Path) -> None:
    from llmforge.retrain import base_of, training_data

    data = _prepared(tmp_path / "prep")
    trained = _trained(tmp_path / "train", [data])
    assert training_data(trained, "registry:m@1") == data.resolve()
    with RunDir(tmp_path / "export", kind="export", command="export", config={}, parents=[trained]) as run:
        run.extra = {"formats": {}}
        run.finish({})
    assert training_data(tmp_path / "export", "registry:m@2") == data.resolve()  # through the export's parent
    assert base_of(trained, "registry:m@1") == "/models/base"
    with pytest.raises(LlmforgeError, match="records no base_model"):
        base_of(_trained(tmp_path / "old", [data], base=None), "registry:m@3")
    with pytest.raises(LlmforgeError, match="no train run with a recorded prepared dataset"):
        training_data(make_run(tmp_path / "bare", b"\x03"), "registry:m@4")
    (data / "train" / "dataset_info.json").write_text('{"changed": 1}', encoding="utf-8")
    with pytest.raises(LlmforgeError, match=r"was modified:\n  changed: train/dataset_info.json"):
        training_data(trained, "registry:m@1")


def test_retrain_refuses_before_training_what_it_cannot_do(tmp_path: Path) -> None:
    from llmforge.retrain import _without_password, retrain

    with pytest.raises(LlmforgeError, match="retrain.registry is not set"):
        retrain(load_config(None), ["new.jsonl"])
    with pytest.raises(LlmforgeError, match=r"rougeL, answer metrics that need eval.generate_samples > 0"):
        retrain(load_config(None, ["retrain.registry=m", "retrain.gate.max_metric_drop={rougeL: 0.1}"]), ["n.jsonl"])
    with pytest.raises(LlmforgeError, match="no new data"):
        retrain(load_config(None, ["retrain.registry=m"]), [])
    assert _without_password("http://ci:hunter2@mlflow:5000") == "http://ci:***@mlflow:5000"
    assert _without_password("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
