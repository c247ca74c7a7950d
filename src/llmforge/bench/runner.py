"""`llmforge bench`: every variant measured the same way, each in a fresh process (clean load time and RSS).

Each variant runs on its own runtime (PyTorch, ONNX Runtime, llama.cpp; see `llmforge.models.runtimes`). A variant
that fails is recorded with its reason and the others go on; finished variants are written to the run's staging
folder as they come (`partial/variants.json`, `partial/report.md`), so a bench that dies keeps what it measured
in `<run>.partial/partial/`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

from llmforge.artifacts import RunDir, StageResult, write_atomic, write_json
from llmforge.bench.config import BenchConfig
from llmforge.bench.measure import machine_read_bandwidth
from llmforge.bench.report import markdown, write_report
from llmforge.models.reference import artifact_bytes, expand_export_runs, resolve_ref
from llmforge.progress import Hooks, begin

PARTIAL = "partial"  # the variants measured so far, while the bench runs; kept if it dies


def parse_variant(text: str) -> tuple[str, str]:
    """'tuned=runs/demo/train' -> ('tuned', 'runs/demo/train'); 'demo' -> ('demo', 'demo')."""
    name, sep, model = text.partition("=")
    return (name, model) if sep and name and model else (text, text)


def run_worker(name: str, model: str, cfg: BenchConfig) -> dict[str, Any]:
    """The variant's measurements, or {name, model, error} when it failed (with the worker's stderr on a crash)."""
    from llmforge.bench.worker import USER_ERROR

    job = {"name": name, "model": model, "data": str(cfg.data) if cfg.data else None,
           "options": cfg.bench.model_dump()}
    failed = {"name": name, "model": model}
    try:
        proc = subprocess.run([sys.executable, "-m", "llmforge.bench.worker", json.dumps(job)],
                              capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {**failed, "error": "no result within 3600 s"}
    lines = proc.stdout.strip().splitlines()
    last = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode == 0 and last:
        return last
    if proc.returncode == USER_ERROR and "error" in last:
        return {**failed, "error": last["error"]}
    stderr = proc.stderr.strip()
    why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    last_line = stderr.splitlines()[-1] if stderr else "no output"
    return {**failed, "error": f"the worker crashed ({why}): {last_line}", "stderr": stderr[-4000:]}


def variants_of(models: list[str]) -> list[tuple[str, str]]:
    """(name, reference) per variant; an export run holding several formats gives one variant per format."""
    return [pair for text in models for pair in expand_export_runs(*parse_variant(text))]


def bench(cfg: BenchConfig, hooks: Hooks | None = None) -> StageResult:
    """Measure every variant of `cfg.models`, each in a fresh process; metrics: the machine and every variant."""
    with (hooks or Hooks()).progress("benchmarking") as progress:
        return _bench(cfg, progress)


def _bench(cfg: BenchConfig, progress: Any) -> StageResult:
    variants = variants_of(cfg.models)
    begin(progress, "benchmarking", len(variants))
    refs = [resolve_ref(model) for _, model in variants]  # fail fast on a bad reference, before minutes of measuring
    bandwidth = machine_read_bandwidth()
    machine = {"read_bandwidth_gbps": bandwidth / 1e9}
    results: list[dict[str, Any]] = []
    runs = list(dict.fromkeys(r.run_dir.resolve() for r in refs if r.run_dir))
    parents = runs + ([cfg.data] if cfg.data else [])
    with RunDir(cfg.output_dir, kind="bench", command="bench", config=cfg, parents=parents,
                resumable=PARTIAL) as run:
        begin(progress, "benchmarking (one fresh process per variant)", len(variants))
        for name, model in variants:
            result = run_worker(name, model, cfg)
            if not result.get("error"):
                _add_roofline(result, model, bandwidth)
            results.append(result)
            _write_partial(run, results, machine)  # a bench that dies later keeps this variant
            if progress:
                progress(1)
        write_report(results, machine, run.staging)
        shutil.rmtree(run.staging / PARTIAL, ignore_errors=True)  # metrics.json and the report hold them now
        metrics = {"machine": machine, "variants": results, "failed": [r["name"] for r in results if r.get("error")]}
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)


def failures(result: StageResult) -> list[dict[str, Any]]:
    return [v for v in result.metrics["variants"] if v.get("error")]


def _add_roofline(result: dict[str, Any], model: str, bandwidth: float) -> None:
    result["artifact_bytes"] = artifact_bytes(model)
    b1 = result["decode_tokens_per_second"].get("1")
    if b1:
        achieved = result["weight_bytes"] * b1
        result["achieved_bandwidth_gbps"] = achieved / 1e9
        result["roofline_fraction"] = achieved / bandwidth


def _write_partial(run: RunDir, results: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    write_json(run.file(f"{PARTIAL}/variants.json"), results)
    write_atomic(run.file(f"{PARTIAL}/report.md"), markdown(results, machine))
