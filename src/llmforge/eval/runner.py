"""`llmforge eval`: token-weighted perplexity of a model over the trainable tokens of a prepared split."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmforge.artifacts import RunDir, read_manifest
from llmforge.config import EvalConfig
from llmforge.errors import LlmforgeError
from llmforge.eval.metrics import IGNORE, perplexity, strided_nll, token_nll
from llmforge.eval.runtimes import Runtime, as_runtime, load_runtime
from llmforge.models.reference import resolve_ref
from llmforge.progress import begin

Progress = Callable[[int], None]


@dataclass
class EvalResult:
    output_dir: Path
    metrics: dict[str, Any]


def load_split(prepared: Path, split: str) -> Any:
    from datasets import Dataset, Features, load_from_disk

    manifest = read_manifest(prepared)
    if manifest.get("kind") != "prepared-dataset":
        raise ValueError(f"{prepared} is a '{manifest.get('kind')}' run, not a prepared dataset")
    folder = Path(prepared) / split
    if not list(folder.glob("*.arrow")):  # an empty split is saved without data files, which datasets can't load
        features = Features.from_dict(json.loads((folder / "dataset_info.json").read_text())["features"])
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return load_from_disk(str(folder))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _strided(runtime: Runtime, row: dict[str, Any], window: int, stride: int) -> tuple[float, int]:
    ids = torch.tensor(row["input_ids"])  # (T,)
    labels = torch.tensor(row["labels"])  # (T,)

    def forward(x: torch.Tensor) -> torch.Tensor:  # (1, L) -> (1, L, V)
        return runtime.forward(x, torch.ones_like(x)).cpu()

    return strided_nll(forward, ids, window, stride, labels)


@torch.no_grad()
def score(
    model: Any, dataset: Any, batch_size: int = 8, progress: Progress | None = None,
    window: int | None = None, stride: int | None = None,
) -> dict[str, float]:
    """Summed NLL over every trainable token of `dataset`; padding and prompts are never scored.

    `model` is a torch model or any runtime (`llmforge.eval.runtimes`): ONNX Runtime and llama.cpp artifacts are
    scored with the same batches, masks and windows. Samples longer than `window` are scored with sliding windows
    (`stride`, default window // 2); the rest in padded batches. Both are reported with the result.
    """
    runtime = as_runtime(model)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths together: less padding
    total_nll, tokens = 0.0, 0
    stride = stride or (window // 2 if window else None)
    begin(progress, "perplexity", len(dataset))
    if window:
        long = [i for i in order if lengths[i] > window]
        order = [i for i in order if lengths[i] <= window]
        for i in long:
            nll, n = _strided(runtime, dataset[i], window, stride)
            total_nll, tokens = total_nll + nll, tokens + n
            if progress:
                progress(1)
    for start in range(0, len(order), batch_size):
        rows = dataset.select(order[start : start + batch_size])
        ids, lab = list(rows["input_ids"]), list(rows["labels"])
        input_ids = _pad(ids, 0)  # (B, T)
        mask = _pad([[1] * len(r) for r in ids], 0)  # (B, T)
        logits = runtime.forward(input_ids, mask)  # (B, T, V)
        nll, n = token_nll(logits, _pad(lab, IGNORE).to(logits.device))
        total_nll, tokens = total_nll + nll, tokens + n
        if progress:
            progress(len(rows))
    return {
        "loss": total_nll / tokens,
        "perplexity": perplexity(total_nll, tokens),
        "nll_sum": total_nll,
        "tokens": tokens,
        "samples": len(dataset),
        "window": window,
        "stride": stride,
    }


def score_generations(records: list[dict[str, Any]], syntax: str) -> dict[str, Any]:
    """Aggregate answer metrics; adds per-sample metrics to `records` in place."""
    from llmforge.eval.text_metrics import exact_match, python_syntax_valid, repetition_rate, rouge

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
    from llmforge.eval.generate import Decoding, generate_samples

    subset = dataset.select(range(min(cfg.eval.generate_samples, len(dataset))))
    decoding = Decoding(max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature)
    records = generate_samples(model, tokenizer, subset, decoding, cfg.eval.batch_size, progress)
    metrics = score_generations(records, cfg.eval.syntax)
    if cfg.eval.similarity_model:
        from llmforge.eval.similarity import embedding_similarity

        metrics["embedding_similarity"] = embedding_similarity(
            [r["prediction"] for r in records], [r["reference"] for r in records], cfg.eval.similarity_model)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    run.file("samples.jsonl").write_text(lines, encoding="utf-8")
    return metrics


def _context(cfg: EvalConfig, dataset: Any) -> int:
    """The longest sequence a runtime with a fixed context (llama.cpp) must hold: a sample, or a prompt and answer."""
    longest = max(len(ids) for ids in dataset["input_ids"])
    if cfg.eval.window:
        longest = min(longest, cfg.eval.window)
    return longest + (cfg.eval.max_new_tokens if cfg.eval.generate_samples else 0)


def evaluate(cfg: EvalConfig, progress: Progress | None = None) -> EvalResult:
    dataset = load_split(cfg.data, cfg.eval.split)
    if cfg.eval.max_samples:
        dataset = dataset.select(range(min(cfg.eval.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"split '{cfg.eval.split}' of {cfg.data} is empty")
    ref = resolve_ref(cfg.model.name_or_path)
    if cfg.eval.harness_tasks and ref.runtime != "pytorch":
        raise LlmforgeError(f"lm-eval harness tasks run on PyTorch models; {ref.ref} is the {ref.format} export "
                            f"({ref.runtime}): drop eval.harness_tasks, or evaluate the model it was exported from")
    runtime, tokenizer = load_runtime(ref, cfg.model, context=_context(cfg, dataset))
    parents = [cfg.data] + ([ref.run_dir] if ref.run_dir else [])
    with RunDir(cfg.output_dir, kind="eval", command="eval", config=cfg, parents=parents,
                dataset_fingerprint=read_manifest(cfg.data).get("dataset_fingerprint")) as run:
        metrics = {"split": cfg.eval.split, "model": cfg.model.name_or_path, "runtime": ref.runtime,
                   "format": ref.format or ref.kind,
                   **score(runtime, dataset, cfg.eval.batch_size, progress, cfg.eval.window, cfg.eval.stride)}
        if cfg.eval.generate_samples:
            metrics.update(_generation_metrics(cfg, runtime, tokenizer, dataset, run, progress))
        if cfg.eval.harness_tasks:
            from llmforge.eval.harness import run_harness

            metrics["harness"] = run_harness(runtime.model, tokenizer, cfg.eval.harness_tasks,
                                             cfg.eval.harness_include, cfg.eval.harness_limit, cfg.eval.batch_size)
        run.finish(metrics)
    return EvalResult(cfg.output_dir, metrics)
