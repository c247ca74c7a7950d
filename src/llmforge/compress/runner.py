"""`llmforge compress`: make a smaller or faster variant of a model and measure what it cost.

setup (parent model, calibration and held-out samples) -> method (quantize | prune, optional recovery
fine-tune) -> save the variant into a run directory -> reload it as users will and measure its quality against
the parent (perplexity, KL, top-1 agreement, ROUGE) and its real size.

A recovery fine-tune runs the train stage, which this stage does not import: whoever composes the stages hands
it in as `fine_tune` (`llmforge.compress`, the CLI and the pipeline pass `llmforge.train.runner.fine_tune`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from llmforge.artifacts import RunDir, StageResult, lineage
from llmforge.compress.config import CompressConfig, PruneOptions
from llmforge.config import ModelConfig, TrainOptions
from llmforge.errors import LlmforgeError
from llmforge.models.footprint import stored_weights, weight_file_bytes
from llmforge.models.loader import load_model
from llmforge.models.reference import artifact_bytes, resolve_model
from llmforge.progress import Counted, Hooks, Progress, begin

Stage = Callable[[str], None]


class FineTune(Protocol):
    def __call__(self, model: ModelConfig, data: Path, options: TrainOptions, output_dir: Path,
                 callbacks: list[Any]) -> Path:
        """Fine-tune `model` on the prepared `data`; return the trained (merged) model directory."""
        ...
UNSTRUCTURED_NOTE = ("unstructured sparsity zeroes weights inside dense tensors: the file and the latency are "
                     "those of the parent; it pays off only with sparse formats and kernels")


def _splits(cfg: CompressConfig) -> tuple[Any, Any]:
    """(calibration samples from the train split, held-out samples from `cfg.split`), or (None, None)."""
    if cfg.data is None:
        return None, None
    from llmforge.data.splits import load_split

    opts = cfg.compress
    train = load_split(cfg.data, "train")
    held_out = load_split(cfg.data, cfg.split)
    if len(held_out) == 0:
        raise LlmforgeError(f"compress: split '{cfg.split}' of {cfg.data} is empty; choose another with --set split=")
    return (train.select(range(min(opts.calibration_samples, len(train)))),
            held_out.select(range(min(opts.quality_samples, len(held_out)))))


def _calibration_batches(calib: Any, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    from llmforge.compress.quality import padded_batches

    return [{"input_ids": ids, "attention_mask": mask} for ids, mask, _ in padded_batches(calib, batch_size)]


def _recovery_train_options(prune: PruneOptions, method: str, parent: str) -> Any:
    update: dict[str, Any] = {"method": method}
    if method == "lora":
        update["merge"] = True
    if method == "distill":
        update["distill"] = prune.train.distill.model_copy(update={"teacher": parent})
    return prune.train.model_copy(update=update)


def _fine_tune(model_dir: Path, cfg: CompressConfig, method: str, out: Path, callbacks: list[Any],
               fine_tune: FineTune | None) -> Path:
    """Fine-tune `model_dir` with the recovery options; return the trained (merged) model directory."""
    if cfg.data is None:
        raise LlmforgeError("compress: a recovery or gradual fine-tune needs `data` (a prepared dataset)")
    if fine_tune is None:
        raise LlmforgeError("compress: a recovery or gradual fine-tune runs the train stage; call "
                            "`llmforge.compress`, which hands it in, or pass fine_tune=llmforge.train.runner.fine_tune")
    opts = _recovery_train_options(cfg.compress.prune, method, cfg.model.name_or_path)
    return fine_tune(cfg.model.model_copy(update={"name_or_path": str(model_dir)}), cfg.data, opts, out, callbacks)


def _save_dense(model: Any, tokenizer: Any, out: Path) -> Path:
    model.config.use_cache = True
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _prune(parent: Any, tokenizer: Any, cfg: CompressConfig, run: RunDir, calib: Any,
           callbacks: list[Any], stage: Stage, fine_tune: FineTune | None) -> tuple[Path, dict[str, Any]]:
    """Prune a copy of the parent; return the final model dir (relative to the run) and what was done."""
    from llmforge.compress import structured, unstructured

    p = cfg.compress.prune
    model = copy.deepcopy(parent)
    facts: dict[str, Any] = {"method": p.method, "requested_sparsity": p.sparsity}
    if p.method == "structured":
        if p.importance == "activation" and calib is None:
            raise LlmforgeError("prune.importance=activation needs `data` for calibration samples "
                                "(or set prune.importance=magnitude)")
        stats = structured.activation_stats(model, _calibration_batches(calib)) if p.importance == "activation" \
            else None
        facts.update(structured.prune_structured(model, p.sparsity, p.heads, stats))
    elif p.method in ("magnitude", "random"):
        unstructured.prune_unstructured(model, p.sparsity, p.method, p.scope)
    else:
        return _gradual(model, tokenizer, cfg, run, callbacks, stage, facts, fine_tune)
    if p.method != "structured":
        facts.update(unstructured.sparsity_report(model), note=UNSTRUCTURED_NOTE)
    pruned = _save_dense(model, tokenizer, run.file("pruned"))
    if p.recovery == "none":
        return Path("pruned"), facts
    if p.method != "structured" and p.recovery == "lora":
        raise LlmforgeError("prune.recovery=lora would fill the zeroed weights when merged; use full or distill "
                            "for unstructured pruning")
    stage(f"recovery fine-tune ({p.recovery})")
    keep = [unstructured.KeepZeros()] if p.method != "structured" else []
    trained = _fine_tune(pruned, cfg, p.recovery, run.file("recovery"), [*keep, *callbacks], fine_tune)
    facts["before_recovery"] = "pruned"
    return trained.relative_to(run.staging), facts


def _gradual(model: Any, tokenizer: Any, cfg: CompressConfig, run: RunDir, callbacks: list[Any], stage: Stage,
             facts: dict[str, Any], fine_tune: FineTune | None) -> tuple[Path, dict[str, Any]]:
    """Magnitude pruning in `steps` stages on a cubic schedule, fine-tuning (zeros kept) after each stage."""
    from llmforge.compress.unstructured import KeepZeros, cubic_schedule, prune_unstructured, sparsity_report

    p = cfg.compress.prune
    if p.recovery not in ("none", "full"):
        raise LlmforgeError("prune.method=gradual fine-tunes every weight between stages; prune.recovery must be "
                            "none or full")
    schedule = cubic_schedule(p.sparsity, p.steps)
    model_dir, history = None, []
    for i, target in enumerate(schedule, 1):
        stage(f"gradual stage {i}/{len(schedule)}: sparsity {target:.0%}")
        if model_dir is not None:
            model, _ = load_model(cfg.model.model_copy(update={"name_or_path": str(model_dir)}))
        # Global magnitude over all block weights: already-zero weights are the smallest and stay pruned.
        prune_unstructured(model, target, "magnitude", p.scope)
        pruned = _save_dense(model, tokenizer, run.file(f"gradual/stage-{i}-pruned"))
        model_dir = _fine_tune(pruned, cfg, "full", run.file(f"gradual/stage-{i}"), [KeepZeros(), *callbacks],
                               fine_tune)
        history.append({"stage": i, "sparsity": target})
    final, _ = load_model(cfg.model.model_copy(update={"name_or_path": str(model_dir)}))
    facts.update(sparsity_report(final), schedule=history, note=UNSTRUCTURED_NOTE)
    return Path(model_dir).relative_to(run.staging), facts


def _quantize(parent: Any, tokenizer: Any, cfg: CompressConfig, run: RunDir, calib: Any,
              progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    from llmforge.compress.quantize import load_quantized_on_gpu, quantize
    from llmforge.models.quantization import CUDA_SCHEMES

    q = cfg.compress.quantize
    if q.scheme in CUDA_SCHEMES:
        variant = load_quantized_on_gpu(cfg.model, q.scheme)
    elif q.scheme == "int8-static":
        raise LlmforgeError("quantize.scheme=int8-static runs on ONNX Runtime: use `llmforge export -f "
                            "onnx-int8-static` (with --data for calibration samples)")
    else:
        batches = _calibration_batches(calib) if calib is not None else None
        if batches is not None and progress:
            begin(progress, "calibration batches through the model", None)
            batches = Counted(batches, progress)
        variant = quantize(copy.deepcopy(parent), tokenizer, q, batches)
    variant.save(run.file("model"))
    return Path("model"), {"scheme": q.scheme, **variant.facts}


def _measure(parent: Any, child: Any, tokenizer: Any, held_out: Any, cfg: CompressConfig, run: RunDir,
             stage: Stage, progress: Progress | None = None) -> dict[str, Any]:
    from llmforge.compress.quality import compare_generations, compare_logits, torch_logits

    stage("quality against the parent")
    metrics: dict[str, Any] = compare_logits(torch_logits(parent), torch_logits(child), held_out, progress=progress)
    n = min(cfg.compress.generate_samples, len(held_out))
    if n:
        answers, records = compare_generations(parent, child, tokenizer, held_out.select(range(n)),
                                               cfg.compress.max_new_tokens, progress=progress)
        metrics.update(answers)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        run.file("samples.jsonl").write_text(lines, encoding="utf-8")
    return metrics


def load_variant(model_dir: Path, model_cfg: ModelConfig) -> Any:
    """The variant as a user loads it: from its files, in a fresh model object."""
    model, _ = load_model(model_cfg.model_copy(update={"name_or_path": str(model_dir)}))
    return model


def compress(cfg: CompressConfig, hooks: Hooks | None = None, fine_tune: FineTune | None = None) -> StageResult:
    """Make the variant `cfg.compress` describes and measure it against its parent. A recovery or gradual
    fine-tune needs `fine_tune` (see `FineTune`)."""
    hooks = hooks or Hooks()
    with hooks.progress("measuring") as progress:
        return _compress(cfg, hooks.train_callbacks(), hooks.stage, progress, fine_tune)


def _compress(cfg: CompressConfig, callbacks: list[Any], stage: Stage, progress: Progress | None,
              fine_tune: FineTune | None) -> StageResult:
    started = time.perf_counter()
    opts = cfg.compress
    source = resolve_model(cfg.model.name_or_path)  # a registry reference: its run dir, verified, is the parent
    parent, tokenizer = load_model(cfg.model, merge_adapter=True, ref=source)
    calib, held_out = _splits(cfg)
    with RunDir(cfg.output_dir, kind="model", command="compress", config=cfg,
                **lineage(source.run_dir or cfg.model.name_or_path, cfg.data)) as run:
        stage(f"{opts.method}: {opts.variant_name()}")
        if opts.method == "quantize":
            model_dir, facts = _quantize(parent, tokenizer, cfg, run, calib, progress)
        else:
            model_dir, facts = _prune(parent, tokenizer, cfg, run, calib, callbacks or [], stage, fine_tune)
        child = load_variant(run.staging / model_dir, cfg.model)
        metrics: dict[str, Any] = {
            "variant": opts.variant_name(),
            "size_bytes": weight_file_bytes(run.staging / model_dir),
            "parent_size_bytes": artifact_bytes(cfg.model.name_or_path),
            "parameters": stored_weights(child)[0],  # int8 buffers and packed layers count as weights
            "parent_parameters": stored_weights(parent)[0],
            **facts,
        }
        metrics["size_ratio"] = metrics["size_bytes"] / max(metrics["parent_size_bytes"], 1)
        metrics["parameter_reduction"] = 1 - metrics["parameters"] / metrics["parent_parameters"]
        if held_out is not None:
            metrics.update(_measure(parent, child, tokenizer, held_out, cfg, run, stage, progress))
            if opts.method == "quantize":  # a quantized variant is only as good as its gate says
                metrics.update(opts.quantize.gate.apply(metrics))
                metrics["passed"] = metrics["gate_passed"]
            if facts.get("before_recovery"):
                before = load_variant(run.staging / facts["before_recovery"], cfg.model)
                from llmforge.compress.quality import compare_logits, torch_logits

                pre = compare_logits(torch_logits(parent), torch_logits(before), held_out, progress=progress)
                metrics["before_recovery"] = {k: pre[k] for k in ("perplexity", "kl_divergence", "top1_agreement")}
        metrics["seconds"] = time.perf_counter() - started
        run.extra = {"model_dir": str(model_dir), "method": opts.method, "variant": opts.variant_name(),
                     "base_model": cfg.model.name_or_path}
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)

