"""`llmforge run`: the whole pipeline from one config: prepare -> eval base -> train -> eval fine-tuned ->
compress (each variant of `compress:`, measured against the fine-tuned model)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.artifacts import write_json
from llmforge.compress.config import CompressConfig
from llmforge.config import ModelConfig
from llmforge.data.config import PrepareConfig
from llmforge.data.prepare import PrepareResult, prepare
from llmforge.eval.config import EvalConfig
from llmforge.eval.runner import EvalResult, evaluate
from llmforge.eval.success import counted_speedup
from llmforge.export.config import ExportConfig
from llmforge.stages import PipelineConfig, stage_dirs
from llmforge.train.config import TrainConfig
from llmforge.train.recipe import TrainResult, train


@dataclass
class Hooks:
    """Presentation hooks the CLI passes in; the library itself never prints."""

    stage: Callable[[str], None] = lambda name: None
    train_callbacks: Callable[[], list[Any]] = list
    # A fresh progress reporter per stage (see llmforge.progress), used as a context manager; None: no progress.
    progress: Callable[[str], AbstractContextManager[Any]] = lambda name: nullcontext(None)


def run(cfg: PipelineConfig, hooks: Hooks | None = None) -> dict[str, Any]:
    hooks = hooks or Hooks()
    dirs = stage_dirs(cfg)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        hooks.stage(name)
        t = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t
        return result

    def reported(name: str, fn: Callable[[Any], Any]) -> Any:
        with hooks.progress(name) as progress:
            return fn(progress)

    prepared: PrepareResult = timed("prepare", lambda: reported("preparing", lambda p: prepare(
        PrepareConfig(model=cfg.model, data=cfg.data, output_dir=dirs["prepare"]), progress=p)))
    base: EvalResult = timed("eval base", lambda: reported("scoring", lambda p: evaluate(
        EvalConfig(model=cfg.model, data=dirs["prepare"], eval=cfg.eval, output_dir=dirs["eval_base"]),
        progress=p)))
    trained: TrainResult = timed("train", lambda: train(
        TrainConfig(model=cfg.model, data=dirs["prepare"], train=cfg.train, output_dir=dirs["train"]),
        callbacks=hooks.train_callbacks()))
    tuned: EvalResult = timed("eval fine-tuned", lambda: reported("scoring", lambda p: evaluate(
        EvalConfig(model=ModelConfig(**{**cfg.model.model_dump(), "name_or_path": str(dirs["train"])}),
                   data=dirs["prepare"], eval=cfg.eval, output_dir=dirs["eval_finetuned"]), progress=p)))
    base_ppl, tuned_ppl = base.metrics["perplexity"], tuned.metrics["perplexity"]
    summary = {
        "name": cfg.name,
        "eval_split": cfg.eval.split,
        "base_perplexity": base_ppl,
        "finetuned_perplexity": tuned_ppl,
        "perplexity_reduction": 1 - tuned_ppl / base_ppl,
        "scored_tokens": tuned.metrics["tokens"],
        "train_tokens_per_second": trained.metrics["train_tokens_per_second"],
        "train_runtime_seconds": trained.metrics["train_runtime_seconds"],
        "prepare_cached": prepared.cached,
        "samples": prepared.report["samples"],
        "stage_seconds": timings,
        "wall_seconds": time.perf_counter() - started,
        "artifacts": {name: str(dirs[name]) for name in ("prepare", "eval_base", "train", "eval_finetuned")},
    }
    if cfg.compress:
        summary["compression"] = timed("compress", lambda: compress_variants(cfg, hooks))
        kept = [v["size_ratio"] for v in summary["compression"].values() if v.get("passed") is not False]
        if kept:  # a variant that failed its quality gate does not count
            summary["size_reduction"] = 1 - min(kept)
        summary["artifacts"].update({f"compress {n}": str(dirs["compress"] / n) for n in summary["compression"]})
    if cfg.export.formats:
        summary["export"] = timed("export", lambda: export_model(cfg, hooks))
        speedup = counted_speedup(summary["export"]["formats"])  # failed formats do not count
        if speedup is not None:
            summary["inference_speedup"] = speedup
        summary["artifacts"]["export"] = str(dirs["export"])
    if cfg.eval.generate_samples:
        summary["generation"] = {"base": _answer_metrics(base.metrics), "finetuned": _answer_metrics(tuned.metrics)}
    write_json(cfg.output_dir / "summary.json", summary)
    return summary


COMPRESSION_KEYS = ("size_bytes", "size_ratio", "parameters", "parameter_reduction", "perplexity",
                    "parent_perplexity", "perplexity_change", "kl_divergence", "top1_agreement", "rougeL",
                    "rougeL_vs_parent", "passed", "gate_failures")


def compress_variants(cfg: PipelineConfig, hooks: Hooks) -> dict[str, dict[str, Any]]:
    """Each `compress:` variant of the fine-tuned model, in its own run directory; their headline numbers."""
    from llmforge.compress.runner import compress

    dirs = stage_dirs(cfg)
    model = ModelConfig(**{**cfg.model.model_dump(), "name_or_path": str(dirs["train"])})
    results = {}
    for opts in cfg.compress:
        name = opts.variant_name()
        with hooks.progress("measuring") as progress:
            result = compress(CompressConfig(model=model, data=dirs["prepare"], compress=opts,
                                             output_dir=dirs["compress"] / name),
                              callbacks=hooks.train_callbacks(), stage=hooks.stage, progress=progress)
        results[name] = {k: result.metrics[k] for k in COMPRESSION_KEYS if k in result.metrics}
    return results


def export_model(cfg: PipelineConfig, hooks: Hooks) -> dict[str, Any]:
    """The fine-tuned model in `export.formats`, each with its parity result."""
    from llmforge.export.runner import export

    dirs = stage_dirs(cfg)
    model = ModelConfig(**{**cfg.model.model_dump(), "name_or_path": str(dirs["train"])})
    with hooks.progress("parity") as progress:
        result = export(ExportConfig(model=model, data=dirs["prepare"], export=cfg.export,
                                     output_dir=dirs["export"]), stage=hooks.stage, progress=progress)
    keep = ("bytes", "max_abs_logits_diff", "top1_agreement", "greedy_identical", "tokenization_identical",
            "perplexity_change", "gate_failures", "passed", "llama_cpp", "decode_tokens_per_second",
            "speedup_vs_pytorch")
    formats = {fmt: {k: m[k] for k in keep if k in m} for fmt, m in result.metrics["formats"].items()}
    return {"parity_prompts": result.metrics["parity_prompts"], "parity_tokens": result.metrics["parity_tokens"],
            "pytorch_fp32_tokens_per_second": result.metrics.get("pytorch_fp32_tokens_per_second"),
            "formats": formats}


_ANSWER_KEYS = ("generated_samples", "rouge1", "rouge2", "rougeL", "exact_match", "syntax_valid",
                "repetition_rate", "mean_generated_tokens")


def _answer_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in _ANSWER_KEYS if k in metrics}


def read_summary(output_dir: Path) -> dict[str, Any]:
    return json.loads((Path(output_dir) / "summary.json").read_text())
