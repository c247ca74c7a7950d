"""`llmforge run`: the whole pipeline from one config: prepare -> eval base -> train -> eval fine-tuned ->
compress (each variant of `compress:`, measured against the fine-tuned model)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmforge.artifacts import StageResult, write_json
from llmforge.config import PREFERENCE_METHODS
from llmforge.errors import ConfigError
from llmforge.eval.runner import evaluate
from llmforge.eval.success import counted_speedup
from llmforge.prepare.runner import prepare
from llmforge.progress import Hooks
from llmforge.stages import PipelineConfig, Stages
from llmforge.train.runner import fine_tune, train

if TYPE_CHECKING:
    from llmforge.compress.config import CompressConfig


def compress(cfg: CompressConfig, hooks: Hooks | None = None) -> StageResult:
    """`llmforge.compress`: the compress stage, handed the train stage for its recovery fine-tunes."""
    from llmforge.compress.runner import compress as compress_stage

    return compress_stage(cfg, hooks, fine_tune=fine_tune)


def run(cfg: PipelineConfig, hooks: Hooks | None = None) -> dict[str, Any]:
    hooks = hooks or Hooks()
    stages = Stages(cfg)
    dirs = stages.dirs
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        hooks.stage(name)
        t = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t
        return result

    if cfg.train.method in PREFERENCE_METHODS and (cfg.compress or cfg.export.formats):
        what = "compress" if cfg.compress else "export.formats"
        raise ConfigError(f"{what}: a {cfg.train.method} pipeline's data is preference pairs, and compression's "
                          "and export's quality checks score perplexity on an SFT split; run `llmforge compress` / "
                          "`llmforge export` on the trained model with --data pointing at an SFT dataset")
    prepared = timed("prepare", lambda: prepare(stages.prepare(), hooks))
    base = timed("eval base", lambda: evaluate(stages.eval(output=dirs["eval_base"]), hooks))
    trained = timed("train", lambda: train(stages.train(), hooks))
    tuned = timed("eval fine-tuned", lambda: evaluate(
        stages.eval(model=dirs["train"], output=dirs["eval_finetuned"]), hooks))
    summary = {
        "name": cfg.name,
        "eval_split": cfg.eval.split,
        **_scores(base.metrics, tuned.metrics),
        "train_tokens_per_second": trained.metrics["train_tokens_per_second"],
        "train_runtime_seconds": trained.metrics["train_runtime_seconds"],
        "prepare_cached": prepared.cached,
        "samples": prepared.metrics["samples"],
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


PAIR_KEYS = ("logp_accuracy", "logp_margin", "reward_accuracy", "reward_margin")


def _scores(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """The two evals' headline numbers: perplexity and its reduction, or on a preference split (`pairs`) the
    log-probability accuracy and margin of each, and the fine-tuned model's implicit reward against its base."""
    if "pairs" in tuned:
        return {"eval_pairs": tuned["pairs"], "reference": tuned.get("reference"),
                **{f"base_{k}": base[k] for k in PAIR_KEYS if k in base},
                **{f"finetuned_{k}": tuned[k] for k in PAIR_KEYS if k in tuned}}
    return {"base_perplexity": base["perplexity"], "finetuned_perplexity": tuned["perplexity"],
            "perplexity_reduction": 1 - tuned["perplexity"] / base["perplexity"], "scored_tokens": tuned["tokens"]}


COMPRESSION_KEYS = ("size_bytes", "size_ratio", "parameters", "parameter_reduction", "perplexity",
                    "parent_perplexity", "perplexity_change", "kl_divergence", "top1_agreement", "rougeL",
                    "rougeL_vs_parent", "passed", "gate_failures")


def compress_variants(cfg: PipelineConfig, hooks: Hooks) -> dict[str, dict[str, Any]]:
    """Each `compress:` variant of the fine-tuned model, in its own run directory; their headline numbers."""
    stages = Stages(cfg)
    results = {}
    for opts in cfg.compress:
        result = compress(stages.compress(opts, model=stages.dirs["train"]), hooks)
        results[opts.variant_name()] = {k: result.metrics[k] for k in COMPRESSION_KEYS if k in result.metrics}
    return results


def export_model(cfg: PipelineConfig, hooks: Hooks) -> dict[str, Any]:
    """The fine-tuned model in `export.formats`, each with its parity result."""
    from llmforge.export.runner import export

    stages = Stages(cfg)
    result = export(stages.export(model=stages.dirs["train"]), hooks)
    keep = ("bytes", "max_abs_logits_diff", "top1_agreement", "greedy_identical", "tokenization_identical",
            "perplexity_change", "gate_failures", "passed", "llama_cpp", "decode_tokens_per_second",
            "speedup_vs_pytorch")
    formats = {fmt: {k: m[k] for k in keep if k in m} for fmt, m in result.metrics["formats"].items()}
    return {"parity_prompts": result.metrics["parity_prompts"], "parity_tokens": result.metrics["parity_tokens"],
            "pytorch_fp32_tokens_per_second": result.metrics.get("pytorch_fp32_tokens_per_second"),
            "formats": formats}


_ANSWER_KEYS = ("generated_samples", "rouge1", "rouge2", "rougeL", "bertscore_f1", "coherence", "exact_match",
                "syntax_valid", "repetition_rate", "mean_generated_tokens")


def _answer_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in _ANSWER_KEYS if k in metrics}


def read_summary(output_dir: Path) -> dict[str, Any]:
    return json.loads((Path(output_dir) / "summary.json").read_text())
