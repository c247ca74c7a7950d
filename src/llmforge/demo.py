"""The offline demo: a code-assistant model made from the Python standard library.

* The embedded base model (`llmforge/assets/demo-base`) is a Llama-architecture model whose byte-level BPE
  tokenizer and weights were trained by llmforge itself, in completion mode, on the source of the standard
  library's *train* packages (`build_base`, run by `make demo-base`).
* The fine-tuning set pairs each documented stdlib function's signature and docstring (instruction) with its
  code (response). Splits are by top-level package (`sources.module_split`): test packages were never seen in
  pretraining either.
* The real-model demo (`run_real_demo`, `llmforge demo --real`) fine-tunes SmolLM2-135M-Instruct on generated
  docstring -> function tasks (`llmforge.data.code_tasks`) and scores base and fine-tuned models by held-out
  perplexity, sandboxed pass rate (`llmforge.eval.functional`) and a general-ability probe (`llmforge.eval.probe`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmforge.artifacts import write_atomic, write_json
from llmforge.compress.config import CompressOptions, PruneOptions, QuantizeOptions
from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.config import DataConfig, SplitConfig
from llmforge.data.sources import docstring_function_records, module_split, stdlib_text_records
from llmforge.eval.config import EvalOptions
from llmforge.export.config import ExportOptions
from llmforge.prepare.config import PrepareConfig
from llmforge.progress import Hooks
from llmforge.stages import PipelineConfig
from llmforge.train.config import TrainConfig

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


def run_demo(cfg: PipelineConfig, hooks: Hooks | None = None) -> dict[str, Any]:
    """Write the stdlib dataset, run the pipeline, and record the demo's total wall time in summary.json."""
    from llmforge.pipeline import run

    hooks = hooks or Hooks()
    started = time.perf_counter()
    hooks.stage("demo data")
    records = write_demo_dataset(Path(cfg.data.path[0]))
    summary = run(cfg, hooks)
    hooks.stage("serve")
    summary["serve"] = serve_demo(cfg)
    summary["api_p50_latency_ms"] = summary["serve"]["p50_latency_ms"]
    summary.update(demo_records=records, demo_seconds=time.perf_counter() - started)
    write_json(cfg.output_dir / "summary.json", summary)
    return summary


def serve_demo(cfg: PipelineConfig) -> dict[str, Any]:
    """Serve the fine-tuned model, ask it one held-out instruction with the openai client, shut it down."""
    from llmforge.serve.check import serve_check
    from llmforge.stages import Stages

    held_out = next(json.loads(line) for line in Path(cfg.data.path[0]).read_text(encoding="utf-8").splitlines()
                    if json.loads(line)["split"] == "test")
    return serve_check(Stages(cfg).dirs["train"], held_out["input"], log=cfg.output_dir / "serve.log")


# A preset: `llmforge pull smollm2-135m-instruct` (run by `make demo-real`) converts it into a transformers fp32 dir.
REAL_MODEL = "smollm2-135m-instruct"
REAL_TASKS = {"max_train": 384, "max_validation": 16, "max_test": 48}
# The real demo's targets. "General ability kept": the probe loses at most this many items, net.
REAL_TARGETS = {"perplexity_reduction": 0.15, "probe_max_net_lost_items": 1}


def real_demo_config(output_dir: Path = Path("runs/demo-real"), model: str = REAL_MODEL) -> PipelineConfig:
    """The real-model demo: LoRA on generated docstring -> function tasks; `configs/demo-real.yaml` is this
    config written out (a test keeps them equal). No compress/export: those run on the fine-tuned model with
    `llmforge compress` / `llmforge export` when wanted (they would double the demo's time on 2 cores)."""
    return PipelineConfig(
        name="demo-real",
        output_dir=output_dir,
        model=ModelConfig(name_or_path=model),
        data=DataConfig(
            path=[str(output_dir / "data" / "code_tasks.jsonl")],
            format="input_output",
            max_length=384,
            overlong="drop",
            split=SplitConfig(column="split"),
        ),
        train=TrainOptions(
            method="lora", epochs=1, learning_rate=1e-3, batch_size=8, warmup_ratio=0.05, merge=True,
            logging_steps=10,
        ),
        eval=EvalOptions(split="test", batch_size=16, max_new_tokens=96),
    )


def run_real_demo(cfg: PipelineConfig, hooks: Hooks | None = None,
                  tasks: dict[str, int] | None = None) -> dict[str, Any]:
    """Derive the code tasks, run the pipeline (prepare, eval base, LoRA, eval fine-tuned), then score base and
    fine-tuned models on the held-out tasks' tests (sandboxed) and on the general probe; summary.json."""
    from llmforge.data.code_tasks import code_task_records
    from llmforge.eval.probe import probe_change
    from llmforge.pipeline import run
    from llmforge.stages import Stages

    stages = Stages(cfg)
    hooks = hooks or Hooks()
    stage = hooks.stage
    started = time.perf_counter()
    stage("demo data")
    records = code_task_records(**(tasks or REAL_TASKS))
    write_jsonl(records, Path(cfg.data.path[0]))
    held_out = [r for r in records if r["split"] == cfg.eval.split]
    summary = run(cfg, hooks)
    scores = {}
    for label, model in (("base", cfg.model.name_or_path), ("finetuned", str(stages.dirs["train"]))):
        stage(f"functional + probe: {label}")
        t = time.perf_counter()
        scores[label] = score_real_model(stages.model(model),
                                         held_out, cfg.eval.max_new_tokens, cfg.eval.batch_size)
        scores[label]["seconds"] = time.perf_counter() - t
        write_json(cfg.output_dir / f"functional-{label}.json", scores[label])
    base, tuned = scores["base"], scores["finetuned"]
    change = probe_change(base["probe"], tuned["probe"])
    summary["code_tasks"] = {
        "held_out_tasks": len(held_out), "tests_per_task": len(held_out[0]["tests"]) if held_out else 0,
        "base_pass_rate": base["code"]["pass_rate"], "finetuned_pass_rate": tuned["code"]["pass_rate"],
        "base_statuses": base["code"]["statuses"], "finetuned_statuses": tuned["code"]["statuses"],
    }
    summary["general_probe"] = {
        "items": base["probe"]["items"], "base_score": base["probe"]["score"],
        "finetuned_score": tuned["probe"]["score"], "base_by_kind": base["probe"]["by_kind"],
        "finetuned_by_kind": tuned["probe"]["by_kind"], **change,
    }
    net_lost = len(change["lost"]) - len(change["gained"])
    summary["targets"] = {
        "perplexity_reduction_at_least_15pct":
            summary["perplexity_reduction"] >= REAL_TARGETS["perplexity_reduction"],
        "pass_rate_improved": tuned["code"]["pass_rate"] > base["code"]["pass_rate"],
        "general_ability_kept": net_lost <= REAL_TARGETS["probe_max_net_lost_items"],
    }
    summary["targets_met"] = all(summary["targets"].values())
    summary["stage_seconds"].update({f"functional + probe {k}": v["seconds"] for k, v in scores.items()})
    summary.update(demo_records=len(records), demo_seconds=time.perf_counter() - started)
    write_json(cfg.output_dir / "summary.json", summary)
    return summary


def real_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The real demo's before -> after numbers and targets, as table rows (CLI and README)."""
    code, probe, met = summary["code_tasks"], summary["general_probe"], summary["targets"]
    ok = {True: "met", False: "NOT met"}
    return [
        {"metric": f"held-out response perplexity ({summary['scored_tokens']:,} tokens)",
         "base": f"{summary['base_perplexity']:.3f}", "fine-tuned": f"{summary['finetuned_perplexity']:.3f}",
         "target": f"reduction >= 15%: {summary['perplexity_reduction']:.1%}, "
                   f"{ok[met['perplexity_reduction_at_least_15pct']]}"},
        {"metric": f"pass rate, {code['held_out_tasks']} held-out tasks "
                   f"({code['tests_per_task']} tests each, sandboxed)",
         "base": f"{code['base_pass_rate']:.1%}", "fine-tuned": f"{code['finetuned_pass_rate']:.1%}",
         "target": f"higher: {ok[met['pass_rate_improved']]}"},
        {"metric": f"general probe, {probe['items']} prompts (facts, arithmetic, formatting)",
         "base": f"{probe['base_score']:.1%}", "fine-tuned": f"{probe['finetuned_score']:.1%}",
         "target": f"net loss <= {REAL_TARGETS['probe_max_net_lost_items']} prompt "
                   f"(lost {len(probe['lost'])}, gained {len(probe['gained'])}): "
                   f"{ok[met['general_ability_kept']]}"},
    ]


def score_real_model(model_cfg: ModelConfig, tasks: list[dict[str, Any]], max_new_tokens: int,
                     batch_size: int) -> dict[str, Any]:
    """Greedy answers to the held-out tasks (run against their tests) and to the general probe."""
    from llmforge.eval.functional import pass_rate
    from llmforge.eval.probe import PROBE, chat_answers, score_probe
    from llmforge.models.loader import load_model

    model, tokenizer = load_model(model_cfg)
    code_answers = chat_answers(model, tokenizer, [t["input"] for t in tasks], max_new_tokens, batch_size,
                                stop_after_fences=2)
    probe_answers = chat_answers(model, tokenizer, [p.prompt for p in PROBE], min(max_new_tokens, 64), batch_size)
    code = pass_rate(code_answers, [t["tests"] for t in tasks])
    for result, task, answer in zip(code["results"], tasks, code_answers):
        result.update(name=task["name"], answer=answer)
    return {"code": code, "probe": score_probe(probe_answers)}


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
    from llmforge.models.tiny import build_model, train_tokenizer
    from llmforge.prepare.runner import prepare
    from llmforge.train.runner import train

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
    ), Hooks(train_callbacks=lambda: list(callbacks or [])))
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
