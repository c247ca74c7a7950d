"""`llmforge train`: one recipe on transformers' Trainer; the method (full, LoRA) is an option of it.

setup (model, data, collator) -> fit (Trainer) -> save (adapter and/or model, tokenizer, metrics, loss curve).
Batches are packed (`DataCollatorWithFlattening`: samples concatenated without padding, position ids restarting
per sample, so attention never crosses a sample boundary; it needs `use_cache=False`, which the recipe sets) or
grouped by length with dynamic padding; `train.batching: auto` picks what is faster for the attention kernel.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from llmforge.artifacts import RunDir, StageResult, lineage, read_manifest
from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.splits import load_split
from llmforge.errors import LlmforgeError, require
from llmforge.metrics.preference import completion_logps, preference_rows, preference_scores
from llmforge.metrics.score import score
from llmforge.models.cpu import Precision, cpu_threads, precision_for
from llmforge.models.loader import default_device
from llmforge.models.reference import resolve_model
from llmforge.progress import Hooks
from llmforge.train.checkpoints import Guard, last_complete
from llmforge.train.config import TrainConfig
from llmforge.train.curves import save_loss_curve
from llmforge.train.loss import CHUNK_LOGIT_BYTES, ChunkedLossTrainer, chunked_loss_applies
from llmforge.train.memory import gradient_checkpointing, return_freed_memory, sample_lengths
from llmforge.train.methods import ADAPTER_METHODS, adapter_sums_in_fp32, apply_method, load_base, load_teacher
from llmforge.train.preference import (
    is_preference,
    pair_lengths,
    preference_parts,
)


def batching_mode(opts: TrainOptions, attn_implementation: str) -> str:
    if opts.batching != "auto":
        return opts.batching
    # Measured on CPU (SDPA): grouped batches train ~1.5x faster per token than packed ones, whose block-diagonal
    # mask wastes attention compute; flash-attention's varlen kernels make packing the better choice on GPUs.
    return "packed" if attn_implementation == "flash_attention_2" else "grouped"


def make_collator(tokenizer: Any, mode: str) -> Any:
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if mode == "packed":
        return DataCollatorWithFlattening()
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def train_precision(opts: TrainOptions) -> Precision:
    """What the run computes in: `train.precision`, or for 'auto' the device's rule (`llmforge.models.cpu`): on a
    CPU bf16 autocast over fp32 weights where it has AMX-BF16 or avx512_bf16, fp32 where it has neither."""
    return precision_for(opts.precision, default_device())


def training_arguments(opts: TrainOptions, output_dir: Path, has_eval: bool, mode: str = "padded",
                       checkpointing: bool | None = None, args_cls: type | None = None, **extra: Any) -> Any:
    """`checkpointing`: `train.gradient_checkpointing` resolved (`llmforge.train.memory.gradient_checkpointing`); None reads
    the option, with 'auto' as off. `args_cls`: a TrainingArguments subclass (TRL's DPOConfig...) taking `extra`, which
    may also override the settings here."""
    from transformers import TrainingArguments

    args_cls = args_cls or TrainingArguments

    device = default_device()
    precision = train_precision(opts).name
    eval_strategy = ("steps" if opts.eval_steps else "epoch") if has_eval else "no"
    if opts.deepspeed:
        require("deepspeed", "deepspeed")
        if not Path(opts.deepspeed).is_file():
            raise LlmforgeError(f"train.deepspeed: no such config file {opts.deepspeed}")
    if opts.early_stopping_patience and not has_eval:
        raise LlmforgeError("train.early_stopping_patience needs a validation split (data.split.validation > 0)")
    best = bool(opts.early_stopping_patience)  # keep (and end on) the best checkpoint by eval loss
    save_strategy = eval_strategy if best else ("steps" if opts.save_steps else "no")
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=opts.learning_rate,
        lr_scheduler_type=opts.lr_scheduler,
        warmup_steps=opts.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=opts.weight_decay,
        max_grad_norm=opts.max_grad_norm,
        logging_steps=opts.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=opts.eval_steps,
        save_strategy=save_strategy,
        save_steps=(opts.eval_steps if best else opts.save_steps) or 500,
        load_best_model_at_end=best,
        metric_for_best_model="eval_loss" if best else None,
        greater_is_better=False if best else None,
        save_total_limit=opts.save_total_limit,
        activation_checkpointing=checkpointing if checkpointing is not None else opts.gradient_checkpointing is True,
        report_to=opts.report_to or "none",
        fsdp=opts.fsdp or "",
        deepspeed=opts.deepspeed,
        seed=opts.seed,
        data_seed=opts.seed,
        train_sampling_strategy=("group_by_length" if mode == "grouped" else "random") if opts.shuffle
        else "sequential",
        ddp_backend="gloo" if device.type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        logging_nan_inf_filter=False,  # a NaN loss must be seen (and stop the run), not averaged away
    )
    return args_cls(**{**settings, **extra})


def peak_memory_bytes() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def _save(model: Any, tokenizer: Any, cfg: TrainConfig, run: RunDir) -> dict[str, Any]:
    """Write the adapter and/or the full model with its tokenizer; say in the manifest which is where."""
    info: dict[str, Any] = {"method": cfg.train.method, "adapter_dir": None, "model_dir": None}
    if is_preference(cfg.train):
        info["weights"] = cfg.train.weights
    base = resolve_model(cfg.train.distill.teacher if cfg.train.method == "distill" else cfg.model.name_or_path).path
    info["base_model"] = str(Path(base).resolve()) if Path(base).exists() else base
    if cfg.train.weights in ADAPTER_METHODS:
        model.peft_config["default"].base_model_name_or_path = info["base_model"]
        model.save_pretrained(str(run.file("adapter")))
        tokenizer.save_pretrained(str(run.file("adapter")))
        info["adapter_dir"] = "adapter"
        if cfg.train.merge:
            model = model.merge_and_unload()
    if cfg.train.weights in ("full", "distill") or cfg.train.merge:
        model.config.use_cache = True
        model.save_pretrained(str(run.file("model")))
        tokenizer.save_pretrained(str(run.file("model")))
        info["model_dir"] = "model"
    return info


def _resume_point(run: RunDir, resume: bool) -> Path | None:
    if not resume:
        return None
    checkpoint = last_complete(run.staging / "checkpoints")
    if checkpoint is None:
        raise LlmforgeError(
            f"--resume: no complete checkpoint in {run.staging / 'checkpoints'}; set train.save_steps to "
            "checkpoint a run, or start it again without --resume"
        )
    return checkpoint


def rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def train(cfg: TrainConfig, hooks: Hooks | None = None, resume: bool = False, launched: bool = False) -> StageResult:
    """Train and publish the run directory. With `resume`, continue the crashed run at the same output dir.

    `launched`: this is one of several processes started by `launch`, which prepared the run directory; only
    rank 0 evaluates and publishes.
    """
    from transformers import set_seed

    callbacks = (hooks or Hooks()).train_callbacks()
    return_freed_memory()  # before the first large tensor: the heap would otherwise keep gigabytes of freed blocks

    threads = cpu_threads(cfg.train.threads, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    set_seed(cfg.train.seed)
    train_set, val_set = (_check_kind(load_split(cfg.data, s), cfg) for s in ("train", "validation"))
    teacher = load_teacher(cfg.model, cfg.train)
    model, tokenizer = load_base(cfg.model, cfg.train, teacher)
    template = read_manifest(cfg.data).get("chat_template")
    if template:  # the data was rendered with a chosen template: the model is saved with it, to be served with it
        tokenizer.chat_template = (Path(cfg.data) / template).read_text(encoding="utf-8")
    model.config.use_cache = False  # required for packed samples to stay separate
    pref = is_preference(cfg.train)
    if pref:
        train_set, val_set = (preference_rows(s, tokenizer) for s in (train_set, val_set))
        # The reference for the held-out rewards: the model before training (a resumed run has not loaded its
        # checkpoint yet), computed once here rather than kept as a second copy.
        reference = completion_logps(model, tokenizer, val_set, cfg.train.batch_size) if len(val_set) else None
    else:
        train_set, val_set = (s.remove_columns(["attention_mask"]) for s in (train_set, val_set))
        model = apply_method(model, cfg.train)
    # The model trained from is a parent when it is a run (a registry version's, verified), beside the data.
    start = resolve_model(cfg.model.name_or_path).run_dir
    with RunDir(cfg.output_dir, kind="model", command="train", config=cfg, **lineage(start, cfg.data),
                keep_partial=resume or launched, resumable="checkpoints") as run:
        start_from = _resume_point(run, resume)
        guard = Guard()
        mode = batching_mode(cfg.train, cfg.model.attn_implementation)
        if cfg.train.early_stopping_patience:
            from transformers import EarlyStoppingCallback

            callbacks = [EarlyStoppingCallback(cfg.train.early_stopping_patience), *(callbacks or [])]
        if pref:
            trainer = preference_trainer(cfg, model, tokenizer, train_set, val_set, run.file("checkpoints"),
                                         [guard, *(callbacks or [])])
            trainer_cls, checkpointing = type(trainer), trainer.args.activation_checkpointing
        else:
            trainer_cls, extra = _trainer_class(model, teacher, cfg.train)
            lengths = sample_lengths(train_set)
            checkpointing = gradient_checkpointing(cfg.train, model, max(lengths), mode != "packed")
            trainer = trainer_cls(
                model=model, args=training_arguments(cfg.train, run.file("checkpoints"), len(val_set) > 0, mode,
                                                     checkpointing),
                train_dataset=train_set, eval_dataset=val_set if len(val_set) else None,
                data_collator=make_collator(tokenizer, mode), processing_class=tokenizer,
                callbacks=[guard, *(callbacks or [])], **extra,
            )
        if callbacks:  # the caller shows progress; drop the Trainer's own printing of log dicts
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        runtime = time.perf_counter() - started
        if rank() != 0:
            return StageResult(cfg.output_dir, {})
        if guard.problem is not None:
            last = last_complete(run.staging / "checkpoints")
            raise LlmforgeError(
                f"training stopped: {guard.problem} at step {guard.step}. Nothing was published; "
                + (f"the last good checkpoint is {last} (resume with --resume). " if last else "")
                + "Lower train.learning_rate, or check the data for broken samples."
            )
        # Mixed precision wrapped the model's forward in bf16 autocast: the held-out score is the saved model's,
        # in its own dtype, as a reload (or the next stage) computes it.
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        model.eval()
        metrics: dict[str, Any] = {
            "train_loss": output.training_loss,
            "train_runtime_seconds": runtime,
            "train_tokens": trainer.state.num_input_tokens_seen,
            "train_tokens_per_second": trainer.state.num_input_tokens_seen / runtime,
            "train_steps": trainer.state.global_step,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters()),
            **train_precision(cfg.train).describe(),
            "threads": threads,
            "gradient_checkpointing": checkpointing,
            "chunked_loss": trainer_cls is ChunkedLossTrainer,
        }
        if pref and reference is not None:
            scores = preference_scores(completion_logps(model, tokenizer, val_set, cfg.train.batch_size), reference,
                                       cfg.train.preference.beta)
            metrics.update({f"eval_{k}": v for k, v in scores.items()}, eval_pairs=len(val_set),
                           eval_logp_margin_before=float((reference[0] - reference[1]).mean()))
        elif len(val_set):
            val_rows = load_split(cfg.data, "validation")
            val = score(model, val_rows, _score_batch(model, cfg.train.batch_size, max(sample_lengths(val_rows))))
            metrics.update(eval_loss=val["loss"], eval_perplexity=val["perplexity"], eval_tokens=val["tokens"])
        metrics["peak_memory_bytes"] = peak_memory_bytes()
        history = trainer.state.log_history
        run.file("loss_curve.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        save_loss_curve(history, run.file("loss_curve.png"))
        run.extra = _save(model, tokenizer, cfg, run)
        _remove_checkpoints(run)
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)


def _check_kind(rows: Any, cfg: TrainConfig) -> Any:
    """A preference method needs prepared pairs, the other methods prepared samples: say so, not a KeyError."""
    pairs = "chosen" in rows.column_names
    if pairs != is_preference(cfg.train):
        raise LlmforgeError(
            f"train.method={cfg.train.method} needs " + ("preference pairs (prompt/chosen/rejected)" if not pairs
                                                         else "samples, not preference pairs")
            + f", but {cfg.data} holds " + ("preference pairs: use train.method dpo, orpo or kto" if pairs
                                            else "samples: prepare prompt/chosen/rejected records for it")
        )
    return rows


def preference_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, train_set: Any, val_set: Any,
                       checkpoints: Path, callbacks: list[Any]) -> Any:
    """TRL's DPO/ORPO/KTO trainer on the run's arguments (`llmforge.train.preference`); with adapters the model is
    handed over plain with a `peft_config`, so that the reference is the model with the adapter disabled."""
    parts = preference_parts(cfg.train)
    if parts.args.get("train_sampling_strategy") == "sequential" and cfg.train.shuffle:
        train_set = train_set.shuffle(seed=cfg.train.seed)  # once, seeded: a resumed run sees the same order
    longest = max(pair_lengths(train_set, tokenizer))
    # A step scores chosen and rejected: twice the batch's sequences.
    doubled = cfg.train.model_copy(update={"batch_size": 2 * cfg.train.batch_size})
    checkpointing = gradient_checkpointing(doubled, model, longest, True)
    args = training_arguments(cfg.train, checkpoints, len(val_set) > 0, "padded", checkpointing,
                              parts.args_cls, **parts.args)
    trainer = parts.trainer_cls(
        model=model, args=args, train_dataset=train_set, eval_dataset=val_set if len(val_set) else None,
        processing_class=tokenizer, callbacks=callbacks, **parts.trainer_kwargs,
    )
    if "peft_config" in parts.trainer_kwargs and train_precision(cfg.train).name != "fp32":
        adapter_sums_in_fp32(trainer.model)
    return trainer


def _trainer_class(model: Any, teacher: Any, opts: TrainOptions) -> tuple[type, dict[str, Any]]:
    """The Trainer and its extra arguments: distillation's (it needs full logits for the KL term), else one
    whose loss never materialises (batch, tokens, vocabulary) logits where the model allows it."""
    from transformers import Trainer

    if teacher is not None:
        from llmforge.train.distill import DistillTrainer

        return DistillTrainer, {"teacher": teacher, "alpha": opts.distill.alpha,
                                "temperature": opts.distill.temperature}
    return (ChunkedLossTrainer if chunked_loss_applies(model, opts) else Trainer), {}


def _score_batch(model: Any, batch_size: int, longest: int) -> int:
    """Held-out scoring computes full logits: fewer rows per batch, so that they stay about the size of two of the
    training loss's chunks instead of becoming the run's peak (the score is a token-weighted sum either way)."""
    return max(1, min(batch_size, 2 * CHUNK_LOGIT_BYTES // (4 * model.config.vocab_size * max(1, longest))))


def _remove_checkpoints(run: RunDir) -> None:
    import shutil

    shutil.rmtree(run.staging / "checkpoints", ignore_errors=True)


def fine_tune(model: ModelConfig, data: Path, options: TrainOptions, output_dir: Path,
              callbacks: list[Any] | None = None) -> Path:
    """Train `model` and return the trained (merged) model directory: compress's recovery fine-tune
    (`llmforge.compress.runner.FineTune`), handed to it by whoever composes the two stages."""
    hooks = Hooks(train_callbacks=lambda: list(callbacks or []))
    result = train(TrainConfig(model=model, data=data, train=options, output_dir=output_dir), hooks)
    return result.output_dir / read_manifest(result.output_dir)["model_dir"]
