"""`llmforge eval`: token-weighted perplexity of a model over the trainable tokens of a prepared split; on a preference
split (prompt / chosen / rejected), log-probability and implicit-reward accuracy and margins instead."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from llmforge.artifacts import CONFIG, RunDir, StageResult, lineage
from llmforge.config import PREFERENCE_METHODS
from llmforge.data.splits import load_split
from llmforge.errors import ConfigError, LlmforgeError
from llmforge.eval.config import EvalConfig
from llmforge.metrics.preference import completion_logps, preference_rows, preference_scores
from llmforge.metrics.score import score
from llmforge.metrics.scripts import dominant_script
from llmforge.metrics.tokens import IGNORE
from llmforge.models.reference import ModelRef, resolve_ref
from llmforge.models.runtimes import load_runtime
from llmforge.progress import Hooks, begin

Progress = Callable[[int], None]
PAIR_COLUMNS = {"prompt", "chosen", "rejected"}
DEFAULT_BETA = 0.1  # TRL's DPO default


def score_generations(records: list[dict[str, Any]], syntax: str) -> dict[str, Any]:
    """Aggregate answer metrics; adds per-sample metrics to `records` in place."""
    from llmforge.metrics.text import exact_match, python_syntax_valid, repetition_rate, rouge

    predictions = [r["prediction"] for r in records]
    references = [r["reference"] for r in records]
    for r in records:
        r["exact_match"] = exact_match(r["prediction"], r["reference"])
        if syntax == "python":
            r["syntax_valid"] = python_syntax_valid(r["prediction"])
    n = len(records)
    out: dict[str, Any] = {
        "generated_samples": n,
        **rouge(predictions, references),
        "exact_match": sum(r["exact_match"] for r in records) / n,
        "repetition_rate": sum(repetition_rate(p) for p in predictions) / n,
        "mean_generated_tokens": sum(r["generated_tokens"] for r in records) / n,
    }
    if syntax == "python":
        out["syntax_valid"] = sum(r["syntax_valid"] for r in records) / n
    return out


def _generation_metrics(
    cfg: EvalConfig, model: Any, tokenizer: Any, dataset: Any, run: RunDir, progress: Progress | None
) -> dict[str, Any]:
    from llmforge.eval.similarity import embedding_similarity, encoder_metrics
    from llmforge.metrics.generate import Decoding, generate_samples

    subset = dataset.select(range(min(cfg.eval.generate_samples, len(dataset))))
    decoding = Decoding(max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature)
    records = generate_samples(model, tokenizer, subset, decoding, cfg.eval.batch_size, progress)
    metrics = score_generations(records, cfg.eval.syntax)
    metrics.update(encoder_metrics(records))  # BERTScore and coherence with the bundled all-MiniLM-L6-v2
    if cfg.eval.similarity_model:
        metrics["embedding_similarity"] = embedding_similarity(
            [r["prediction"] for r in records], [r["reference"] for r in records], cfg.eval.similarity_model)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    run.file("samples.jsonl").write_text(lines, encoding="utf-8")
    return metrics


def sample_scripts(tokenizer: Any, dataset: Any) -> list[str]:
    """The dominant script of each sample's scored text (its trainable tokens, decoded without special tokens):
    the text its perplexity is measured on, not the template or system prompt around it."""
    scored = [[t for t, lab in zip(ids, labels) if lab != IGNORE]
              for ids, labels in zip(dataset["input_ids"], dataset["labels"])]
    return [dominant_script(text) for text in tokenizer.batch_decode(scored, skip_special_tokens=True)]


def by_script(scored: dict[str, Any]) -> dict[str, Any]:
    """`perplexity_by_script` for metrics.json when the split mixes two or more scripts; else nothing."""
    groups = scored.pop("by_group", None) or {}
    if len(groups) < 2:
        return {}
    return {"perplexity_by_script": {script: {k: g[k] for k in ("perplexity", "tokens", "samples")}
                                     for script, g in groups.items()}}


def _context(cfg: EvalConfig, dataset: Any) -> int:
    """The longest sequence a runtime with a fixed context (llama.cpp) must hold: a sample, or a prompt and answer."""
    longest = max(len(ids) for ids in dataset["input_ids"])
    if cfg.eval.window:
        longest = min(longest, cfg.eval.window)
    longest += cfg.eval.max_new_tokens if cfg.eval.generate_samples else 0
    return max(longest, 2048) if cfg.eval.rag else longest  # the passages: rag_top_k chunks of ~200 tokens


def evaluate(cfg: EvalConfig, hooks: Hooks | None = None) -> StageResult:
    """Score `cfg.model` on a prepared split: perplexity, and the answer metrics `cfg.eval` asks for."""
    with (hooks or Hooks()).progress("scoring") as progress:
        return _evaluate(cfg, progress)


def _evaluate(cfg: EvalConfig, progress: Progress | None) -> StageResult:
    dataset = load_split(cfg.data, cfg.eval.split)
    if cfg.eval.max_samples:
        dataset = dataset.select(range(min(cfg.eval.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ConfigError(f"eval.split: split '{cfg.eval.split}' of {cfg.data} is empty; score another one "
                          f"(--set eval.split=validation, or train), or prepare with a {cfg.eval.split} share")
    ref = resolve_ref(cfg.model.name_or_path)
    if PAIR_COLUMNS <= set(dataset.column_names):
        return _evaluate_pairs(cfg, dataset, ref, progress)
    if cfg.eval.harness_tasks and ref.runtime != "pytorch":
        raise LlmforgeError(f"lm-eval harness tasks run on PyTorch models; {ref.ref} is the {ref.format} export "
                            f"({ref.runtime}): drop eval.harness_tasks, or evaluate the model it was exported from")
    runtime, tokenizer = load_runtime(ref, cfg.model, context=_context(cfg, dataset))
    with RunDir(cfg.output_dir, kind="eval", command="eval", config=cfg, **lineage(ref.run_dir, cfg.data)) as run:
        scored = score(runtime, dataset, cfg.eval.batch_size, progress, cfg.eval.window, cfg.eval.stride,
                       groups=sample_scripts(tokenizer, dataset))
        scripts = by_script(scored)  # takes by_group out of scored
        metrics = {"split": cfg.eval.split, "model": cfg.model.name_or_path, "runtime": ref.runtime,
                   "format": ref.format or ref.kind, **scored, **scripts}
        if cfg.eval.generate_samples:
            metrics.update(_generation_metrics(cfg, runtime, tokenizer, dataset, run, progress))
        if cfg.eval.harness_tasks:
            from llmforge.eval.harness import run_harness

            metrics["harness"] = run_harness(runtime.model, tokenizer, cfg.eval.harness_tasks,
                                             cfg.eval.harness_include, cfg.eval.harness_limit, cfg.eval.batch_size)
        if cfg.eval.rag:
            from llmforge.eval.rag import evaluate_rag

            metrics["rag"], records = evaluate_rag(runtime, tokenizer, cfg.eval.rag, cfg.eval.rag_qa,
                                                   cfg.eval.rag_questions, cfg.eval.rag_top_k, cfg.eval.batch_size)
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            run.file("rag_samples.jsonl").write_text(lines, encoding="utf-8")
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)


def _evaluate_pairs(cfg: EvalConfig, dataset: Any, ref: ModelRef, progress: Progress | None) -> StageResult:
    """A preference split (prompt / chosen / rejected): log-probability accuracy and margin of the model, and the
    implicit DPO reward against a reference (`llmforge.metrics.preference`), as training scores its held-out pairs."""
    asked = [k for k in ("generate_samples", "harness_tasks", "rag", "window") if getattr(cfg.eval, k)]
    if asked:
        raise ConfigError(f"eval.{asked[0]}: {cfg.data}'s {cfg.eval.split} split holds preference pairs, which are "
                          "scored by log-probability only; evaluate answers on an SFT split")
    if ref.runtime != "pytorch":
        raise LlmforgeError(f"preference pairs are scored on PyTorch models; {ref.ref} is the {ref.format} export "
                            f"({ref.runtime}): evaluate the model it was exported from")
    runtime, tokenizer = load_runtime(ref, cfg.model)
    model, rows = runtime.model, preference_rows(dataset, tokenizer)
    begin(progress, "pairs", len(rows))
    policy = completion_logps(model, tokenizer, rows, cfg.eval.batch_size, progress)
    reference, against = None, None
    if cfg.eval.reference:
        base, _ = load_runtime(resolve_ref(cfg.eval.reference), cfg.model.model_copy(
            update={"name_or_path": cfg.eval.reference}))
        begin(progress, "reference pairs", len(rows))
        reference, against = completion_logps(base.model, tokenizer, rows, cfg.eval.batch_size, progress), \
            cfg.eval.reference
    elif ref.adapter is not None:
        begin(progress, "reference pairs (adapter off)", len(rows))
        with model.disable_adapter():
            reference = completion_logps(model, tokenizer, rows, cfg.eval.batch_size, progress)
        against = f"{ref.path} (the adapter's base: adapter off)"
    beta = cfg.eval.beta or _run_beta(ref) or DEFAULT_BETA
    metrics = {"split": cfg.eval.split, "model": cfg.model.name_or_path, "runtime": ref.runtime,
               "format": ref.format or ref.kind, "pairs": len(rows), "reference": against, "beta": beta,
               **preference_scores(policy, reference, beta)}
    with RunDir(cfg.output_dir, kind="eval", command="eval", config=cfg, **lineage(ref.run_dir, cfg.data)) as run:
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)


def _run_beta(ref: ModelRef) -> float | None:
    """The beta a preference training run used (its config.yaml), or None when `ref` is not one."""
    config = ref.run_dir / CONFIG if ref.run_dir else None
    if config is None or not config.is_file():
        return None
    train = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("train") or {}
    if train.get("method") not in PREFERENCE_METHODS:
        return None
    return (train.get("preference") or {}).get("beta")
