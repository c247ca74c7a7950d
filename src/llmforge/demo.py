"""The offline demo: a code-assistant model made from the Python standard library.

* The embedded base model (`llmforge/assets/demo-base`) is a Llama-architecture model whose byte-level BPE
  tokenizer and weights were trained by llmforge itself, in completion mode, on the source of the standard
  library's *train* packages (`build_base`, run by `make demo-base`).
* The fine-tuning set pairs each documented stdlib function's signature and docstring (instruction) with its
  code (response). Splits are by top-level package (`sources.module_split`): test packages were never seen in
  pretraining either.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmforge.artifacts import write_atomic, write_json
from llmforge.config import (
    CompressOptions, DataConfig, EvalOptions, ExportOptions, ModelConfig, PipelineConfig, PrepareConfig,
    PruneOptions, QuantizeOptions, SplitConfig, TrainConfig, TrainOptions,
)
from llmforge.data.sources import docstring_function_records, module_split, stdlib_text_records

PACKAGE_ROOT = Path(__file__).resolve().parent


def write_jsonl(records: Any, path: Path) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    write_atomic(path, "\n".join(lines) + "\n")
    return len(lines)


def write_demo_dataset(path: Path) -> int:
    """Docstring -> function pairs with their split (by top-level package). Returns the record count."""
    return write_jsonl(
        ({"input": r["input"], "output": r["output"], "split": module_split(r["module"]), "module": r["module"]}
         for r in docstring_function_records()),
        path,
    )


def demo_config(output_dir: Path = Path("runs/demo"), data: Path | None = None) -> PipelineConfig:
    """The demo pipeline; `configs/demo.yaml` is this config written out (a test keeps them equal)."""
    return PipelineConfig(
        name="demo",
        output_dir=output_dir,
        model=ModelConfig(name_or_path="demo"),
        data=DataConfig(
            path=[str(data or output_dir / "data" / "stdlib_functions.jsonl")],
            format="input_output",
            max_length=384,
            overlong="drop",
            max_records=2500,
            split=SplitConfig(column="split"),
        ),
        train=TrainOptions(
            method="lora", epochs=1, learning_rate=2e-3, batch_size=8, warmup_ratio=0.05,
            merge=True, logging_steps=10,
        ),
        eval=EvalOptions(split="test", batch_size=16, max_samples=400, generate_samples=48, max_new_tokens=160,
                         syntax="python"),
        compress=[
            CompressOptions(name="int8", method="quantize", quantize=QuantizeOptions(scheme="int8-dynamic")),
            CompressOptions(name="pruned-25", method="prune",
                            prune=PruneOptions(method="structured", sparsity=0.25, recovery="distill")),
        ],
        export=ExportOptions(formats=["onnx", "onnx-int8", "gguf-q8_0"], speed=True),
    )


def run_demo(cfg: PipelineConfig, hooks: Any = None) -> dict[str, Any]:
    """Write the stdlib dataset, run the pipeline, and record the demo's total wall time in summary.json."""
    from llmforge.pipeline import run

    started = time.perf_counter()
    if hooks is not None:
        hooks.stage("demo data")
    records = write_demo_dataset(Path(cfg.data.path[0]))
    summary = run(cfg, hooks)
    if hooks is not None:
        hooks.stage("serve")
    summary["serve"] = serve_demo(cfg)
    summary["api_p50_latency_ms"] = summary["serve"]["p50_latency_ms"]
    summary.update(demo_records=records, demo_seconds=time.perf_counter() - started)
    write_json(cfg.output_dir / "summary.json", summary)
    return summary


def serve_demo(cfg: PipelineConfig) -> dict[str, Any]:
    """Serve the fine-tuned model, ask it one held-out instruction with the openai client, shut it down."""
    from llmforge.config import stage_dirs
    from llmforge.serve.check import serve_check

    held_out = next(json.loads(line) for line in Path(cfg.data.path[0]).read_text(encoding="utf-8").splitlines()
                    if json.loads(line)["split"] == "test")
    return serve_check(stage_dirs(cfg)["train"], held_out["input"], log=cfg.output_dir / "serve.log")


def build_base(
    output_dir: Path,
    work_dir: Path,
    *,
    max_steps: int = 2400,
    preset: str = "demo",
    vocab_size: int = 8192,
    callbacks: list[Any] | None = None,
    stage: Callable[[str], None] = lambda name: None,
) -> dict[str, Any]:
    """Pretrain the demo base model from scratch with llmforge's own prepare and train (full, text mode)."""
    from llmforge.data.prepare import prepare
    from llmforge.models.tiny import build_model, train_tokenizer
    from llmforge.train.recipe import train

    work_dir.mkdir(parents=True, exist_ok=True)
    stage("corpus")
    corpus = work_dir / "stdlib_train.jsonl"
    documents = write_jsonl((r for r in stdlib_text_records("train") if r["text"].strip()), corpus)
    stage("tokenizer")
    texts = (json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines())
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    init = work_dir / "init"
    build_model(tokenizer, preset).save_pretrained(str(init))
    tokenizer.save_pretrained(str(init))
    stage("prepare")
    prepared = prepare(PrepareConfig(
        model=ModelConfig(name_or_path=str(init)),
        data=DataConfig(path=[str(corpus)], format="text", max_length=512, overlong="chunk",
                        split=SplitConfig(validation=0.02, test=0.0)),
        output_dir=work_dir / "prepared",
    ))
    stage("pretrain")
    result = train(TrainConfig(
        model=ModelConfig(name_or_path=str(init)),
        data=prepared.output_dir,
        train=TrainOptions(method="full", max_steps=max_steps, learning_rate=3e-3, batch_size=8,
                           warmup_ratio=0.03, weight_decay=0.1, batching="padded", logging_steps=25),
        output_dir=work_dir / "pretrain",
    ), callbacks=callbacks)
    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(result.output_dir / "model", staging)
    provenance = {
        "what": "llmforge demo base model: Llama architecture, pretrained from scratch by llmforge",
        "corpus": "Python standard library source (train packages only), "
                  f"{documents} files from Python {__import__('sys').version.split()[0]}",
        "preset": preset,
        "vocab_size": len(tokenizer),
        "pretrain_steps": result.metrics["train_steps"],
        "pretrain_tokens": result.metrics["train_tokens"],
        "pretrain_loss": result.metrics["train_loss"],
        "validation_loss": result.metrics.get("eval_loss"),
        "validation_perplexity": result.metrics.get("eval_perplexity"),
        "total_parameters": result.metrics["total_parameters"],
        "command": f"llmforge build-demo-base --max-steps {max_steps}",
    }
    write_json(staging / "provenance.json", provenance)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)
    return provenance
