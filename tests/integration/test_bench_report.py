"""`llmforge bench` and `llmforge report` end to end, and the HTML report opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli import cli, prepared_workdir

pytestmark = pytest.mark.integration
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
SMALL = ["--set", "bench.repeats=2", "--set", "bench.new_tokens=4", "--set", "bench.prompt_tokens=8",
         "--set", "bench.batch_sizes=[1,2]"]


@pytest.fixture(scope="module")
def bench_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    cli("bench", "--model", f"tiny={tiny_model_dir}", "--model", str(tiny_model_dir), "--output", "b", *SMALL,
        cwd=root)
    return root / "b"


def test_bench_measures_every_variant(bench_run: Path) -> None:
    metrics = json.loads((bench_run / "metrics.json").read_text())
    assert [v["name"] for v in metrics["variants"]][0] == "tiny"
    for v in metrics["variants"]:
        assert v["load_seconds"] > 0 and v["ttft_ms"]["median"] > 0 and v["peak_rss_bytes"] > 0
        assert set(v["decode_tokens_per_second"]) == {"1", "2"}
        assert v["latency_ms"]["p50"] <= v["latency_ms"]["p95"]
        assert v["artifact_bytes"] > 0 and 0 < v["roofline_fraction"]
    assert metrics["machine"]["read_bandwidth_gbps"] > 0
    assert "| tiny |" in (bench_run / "report.md").read_text()


def test_report_compares_runs(bench_run: Path, tmp_path: Path) -> None:
    cli("report", str(bench_run), str(bench_run), "--output", "r", cwd=tmp_path)
    text = (tmp_path / "r" / "report.md").read_text()
    assert text.count("| tiny (b) |") == 2


def test_html_report_renders_in_headless_chromium(bench_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1400,1000", (bench_run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    assert shot.exists() and shot.stat().st_size > 10_000  # a page with a table and plots, not a blank one


@pytest.fixture(scope="module")
def export_workdir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset and an export run (onnx, gguf-f32) of the tiny model, written by the real CLI."""
    root = prepared_workdir(tmp_path_factory.mktemp("bench-exports"), tiny_model_dir, 60)
    cli("export", "--model", str(tiny_model_dir), "--data", "prep", "-f", "onnx", "-f", "gguf-f32", "--output",
        "exported", "--set", "export.speed=false", "--set", "export.parity_prompts=2", cwd=root)
    return root


def test_bench_measures_exports_on_their_runtimes_and_keeps_going_past_failures(
        tiny_model_dir: Path, export_workdir: Path) -> None:
    """An export run expands into one variant per format; a TensorRT engine (no CUDA here) fails alone."""
    trt = export_workdir / "trt-export"
    (trt / "tensorrt-fp16").mkdir(parents=True, exist_ok=True)
    (trt / "manifest.json").write_text(json.dumps({"kind": "export", "formats": {"tensorrt-fp16": "tensorrt-fp16"}}))
    out = cli("bench", "--model", f"trt={trt}", "--model", "exp=exported", "--model", f"hf={tiny_model_dir}",
              "--data", "prep", "--output", "b", *SMALL, cwd=export_workdir, check=False)
    assert out.returncode == 1, out.stderr[-2000:]  # a variant failed; the run is still written
    metrics = json.loads((export_workdir / "b" / "metrics.json").read_text())
    by_name = {v["name"]: v for v in metrics["variants"]}
    assert list(by_name) == ["trt", "exp/onnx", "exp/gguf-f32", "hf"]
    assert "no CUDA device" in by_name["trt"]["error"]
    onnx, hf = by_name["exp/onnx"], by_name["hf"]
    assert (onnx["runtime"], onnx["format"], hf["runtime"]) == ("onnxruntime", "onnx", "pytorch")
    assert set(onnx["decode_tokens_per_second"]) == {"1", "2"} and onnx["artifact_bytes"] > 0
    assert abs(onnx["perplexity"] / hf["perplexity"] - 1) < 1e-4  # the same model, the same scored tokens
    gguf = by_name["exp/gguf-f32"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert "llmforge[llamacpp]" in gguf["error"]
    else:
        assert gguf["runtime"] == "llamacpp" and set(gguf["decode_tokens_per_second"]) == {"1"}
        assert gguf["skipped_batch_sizes"] == [2] and abs(gguf["perplexity"] / hf["perplexity"] - 1) < 1e-4
    report = (export_workdir / "b" / "report.md").read_text()
    assert "| exp/onnx | onnx |" in report and "- **trt**" in report and "failed: " in report
    assert metrics["failed"] == [v["name"] for v in metrics["variants"] if v.get("error")]
