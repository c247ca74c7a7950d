"""`llmforge bench`: every variant measured the same way, each in a fresh process (clean load time and RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.artifacts import RunDir, is_run_dir
from llmforge.bench.measure import machine_read_bandwidth
from llmforge.bench.report import write_report
from llmforge.config import BenchConfig
from llmforge.errors import LlmforgeError
from llmforge.models.loader import resolve_model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".onnx_data", ".pt", ".engine")


@dataclass
class BenchResult:
    output_dir: Path
    variants: list[dict[str, Any]]


def parse_variant(text: str) -> tuple[str, str]:
    """'tuned=runs/demo/train' -> ('tuned', 'runs/demo/train'); 'demo' -> ('demo', 'demo')."""
    name, sep, model = text.partition("=")
    return (name, model) if sep and name and model else (text, text)


def artifact_bytes(model: str) -> int:
    """Bytes of weight files the variant needs on disk (base and adapter for an adapter run)."""
    resolved = resolve_model(model)
    folders = [Path(resolved.path)] + ([resolved.adapter] if resolved.adapter else [])
    if not all(f.is_dir() for f in folders):
        return 0  # a hub id: not on disk
    return sum(weight_file_bytes(f) for f in folders)


def weight_file_bytes(folder: Path) -> int:
    """Bytes of the weight files under `folder` (safetensors, ONNX graphs and data, GGUF, engines)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.name.endswith(WEIGHT_SUFFIXES))


def run_worker(name: str, model: str, cfg: BenchConfig) -> dict[str, Any]:
    job = {"name": name, "model": model, "data": str(cfg.data) if cfg.data else None,
           "options": cfg.bench.model_dump()}
    proc = subprocess.run([sys.executable, "-m", "llmforge.bench.worker", json.dumps(job)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise LlmforgeError(f"benchmarking '{name}' ({model}) failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(cfg: BenchConfig, progress: Any = None) -> BenchResult:
    variants = [parse_variant(v) for v in cfg.models]
    for _, model in variants:
        resolve_model(model)  # fail fast on a bad reference, before minutes of measuring
    bandwidth = machine_read_bandwidth()
    results = []
    parents = [Path(m) for _, m in variants if is_run_dir(Path(m))] + ([cfg.data] if cfg.data else [])
    with RunDir(cfg.output_dir, kind="bench", command="bench", config=cfg, parents=parents) as run:
        for name, model in variants:
            result = run_worker(name, model, cfg)
            result["artifact_bytes"] = artifact_bytes(model)
            b1 = result["decode_tokens_per_second"].get("1")
            if b1:
                achieved = result["weight_bytes"] * b1
                result["achieved_bandwidth_gbps"] = achieved / 1e9
                result["roofline_fraction"] = achieved / bandwidth
            results.append(result)
            if progress:
                progress(1)
        machine = {"read_bandwidth_gbps": bandwidth / 1e9}
        write_report(results, machine, run.staging)
        run.finish({"machine": machine, "variants": results})
    return BenchResult(cfg.output_dir, results)
