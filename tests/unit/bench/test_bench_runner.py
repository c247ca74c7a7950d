"""The bench keeps going when a variant fails, and keeps what it measured when it dies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.bench import runner
from llmforge.bench.config import BenchConfig
from llmforge.bench.report import markdown, page

MACHINE = {"read_bandwidth_gbps": 10.0}


def measured(name: str) -> dict:
    return {"name": name, "model": name, "format": "transformers", "artifact_bytes": 2e6, "parameters": 1e6,
            "load_seconds": 0.5, "ttft_ms": {"median": 3.0}, "prefill_tokens_per_second": 900.0,
            "decode_tokens_per_second": {"1": 100.0}, "latency_ms": {"p50": 40.0, "p95": 50.0},
            "peak_rss_bytes": 3e8, "prompt_tokens": 8, "new_tokens": 4, "weight_bytes": 4e6}


@pytest.fixture()
def fake_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bandwidth measurement and no size look-ups: each test scripts `run_worker` itself."""
    monkeypatch.setattr(runner, "machine_read_bandwidth", lambda: 1e10)
    monkeypatch.setattr(runner, "artifact_bytes", lambda model: 2_000_000)


def test_a_failed_variant_is_reported_and_the_others_kept(fake_workers, tiny_model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"a": measured("a"), "bad": {"name": "bad", "model": "x", "error": "no CUDA device"},
               "c": measured("c")}
    monkeypatch.setattr(runner, "run_worker", lambda name, model, cfg: answers[name])
    cfg = BenchConfig(models=[f"{n}={tiny_model_dir}" for n in answers], output_dir=tmp_path / "b")
    result = runner.bench(cfg)
    assert [v["name"] for v in runner.failures(result)] == ["bad"]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["failed"] == ["bad"] and [v["name"] for v in metrics["variants"]] == ["a", "bad", "c"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "| a |" in report and "| c |" in report and "- **bad** (x): failed: no CUDA device" in report
    assert "failed: no CUDA device" in (tmp_path / "b" / "report.html").read_text()
    assert not (tmp_path / "b" / runner.PARTIAL).exists()  # metrics.json holds the variants once finished


def test_a_bench_that_dies_keeps_the_finished_variants(fake_workers, tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def worker(name: str, model: str, cfg: BenchConfig) -> dict:
        if name == "second":
            raise KeyboardInterrupt  # the user gives up, or the machine goes away, mid-bench
        return measured(name)

    monkeypatch.setattr(runner, "run_worker", worker)
    cfg = BenchConfig(models=[f"first={tiny_model_dir}", f"second={tiny_model_dir}"], output_dir=tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        runner.bench(cfg)
    partial = tmp_path / "b.partial" / runner.PARTIAL
    assert [v["name"] for v in json.loads((partial / "variants.json").read_text())] == ["first"]
    assert "| first |" in (partial / "report.md").read_text()
    assert not (tmp_path / "b").exists()  # never looks finished


def test_report_of_only_failures_says_so() -> None:
    results = [{"name": "g", "model": "m", "error": "'llama_cpp' is not installed;\n pip install 'llmforge[llamacpp]'"}]
    text = markdown(results, MACHINE)
    assert "No variant could be measured." in text
    assert "- **g** (m): failed: 'llama_cpp' is not installed; pip install 'llmforge[llamacpp]'" in text
    assert "<h2>Failed variants</h2>" in page(results, MACHINE)


def test_worker_crash_is_recorded_with_its_stderr(tmp_path: Path) -> None:
    onnx = tmp_path / "broken"
    onnx.mkdir()
    (onnx / "onnx_config.json").write_text(json.dumps({"format": "llmforge-onnx-causal-lm", "model_file": "model.onnx",
                                                       "inputs": [], "outputs": []}))
    (onnx / "model.onnx").write_bytes(b"not a graph")
    (onnx / "tokenizer_config.json").write_text("{}")
    cfg = BenchConfig(models=[str(onnx)], output_dir=tmp_path / "b")
    result = runner.run_worker("broken", str(onnx), cfg)
    assert result["error"].startswith("the worker crashed (exit status 1)") and result["stderr"]
