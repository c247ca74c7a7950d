"""`llmforge bench` and `llmforge report` end to end, and the HTML report opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli import cli

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
