"""Terminal presentation for the CLI: progress bars and tables (rich). Library code never prints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` callback drawing a bar on stderr."""
    with _progress() as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda n: bar.advance(task, n)


def train_progress() -> Any:
    """A TrainerCallback that shows steps, loss and learning rate as a rich progress bar."""
    from transformers import TrainerCallback

    class RichTrainProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bar: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar = _progress()
            self.bar.start()
            self.task = self.bar.add_task("training", total=state.max_steps, info="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if self.bar and logs and "loss" in logs:
                self.bar.update(self.task, info=f"loss {logs['loss']:.3f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar:
                self.bar.stop()

    return RichTrainProgress()


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    keys = list(dict.fromkeys(k for row in rows for k in row))  # every column any row has, in order
    for key in keys:
        t.add_column(str(key))
    for row in rows:
        t.add_row(*(Text(_fmt(row.get(k))) for k in keys))  # Text: values are data, never rich markup
    return t


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def show(renderable: Any) -> None:
    Console().print(renderable)


def show_lint(report: dict[str, Any], output_dir: Any, cached: bool) -> None:
    tokens = report["tokens"]
    rows = [
        {"": "records read", "value": report["records_read"]},
        {"": "records kept", "value": report["records_kept"]},
        *({"": f"dropped: {reason}", "value": n} for reason, n in report["dropped"].items()),
        *({"": f"samples: {split}", "value": n} for split, n in report["samples"].items()),
        {"": "tokens (total)", "value": tokens["total"]},
        {"": "tokens p50 / p90 / max", "value": f"{tokens.get('p50', 0):.0f} / {tokens.get('p90', 0):.0f} / "
                                                 f"{tokens.get('max', 0)}"},
        {"": "trainable-token fraction", "value": report["trainable_token_fraction"]},
        {"": f"over {report['max_length']} tokens", "value": f"policy {report['overlong_policy']}: "
                                                              f"{report['truncated']} truncated, "
                                                              f"{report['chunked']} chunked"},
    ]
    show(table(f"prepared dataset{' (cached)' if cached else ''}: {output_dir}", rows))


def show_preview(prepared: Any, model_cfg: Any, n: int) -> None:
    from rich.text import Text

    from llmforge.data.preview import preview
    from llmforge.models.loader import load_tokenizer

    out = Console()
    for i, runs in enumerate(preview(prepared, load_tokenizer(model_cfg), n)):
        out.rule(f"sample {i}  ([green]trained[/] / [dim]context[/])")
        text = Text()
        for piece, trainable in runs:
            text.append(piece, style="bold green" if trainable else "dim")
        out.print(text)


def show_metrics(title: str, metrics: dict[str, Any], output_dir: Any) -> None:
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (dict, list))]
    show(table(f"{title}: {output_dir}", rows))


def show_summary(summary: dict[str, Any], total_seconds: float | None = None) -> None:
    rows = [
        {"model": "base", "perplexity": summary["base_perplexity"]},
        {"model": "fine-tuned", "perplexity": summary["finetuned_perplexity"]},
    ]
    show(table(f"{summary['name']}: held-out '{summary['eval_split']}' perplexity "
               f"({summary['scored_tokens']:,} response tokens)", rows))
    Console().print(
        f"perplexity reduction: [bold]{summary['perplexity_reduction']:.1%}[/]   "
        f"train: {summary['train_tokens_per_second']:,.0f} tok/s   "
        f"pipeline: {summary['wall_seconds']:.0f} s"
        + (f"   total: {total_seconds:.0f} s" if total_seconds is not None else "")
    )
    if "generation" in summary:
        gen = summary["generation"]
        rows = [{"metric": k, "base": gen["base"][k], "fine-tuned": gen["finetuned"].get(k)} for k in gen["base"]]
        show(table(f"answers to {gen['base'].get('generated_samples', 0)} held-out prompts", rows))
    if "compression" in summary:
        rows = [{"variant": name, "size MB": v["size_bytes"] / 1e6, "size": f"{v['size_ratio']:.0%}",
                 "perplexity": v.get("perplexity"), "vs parent": f"{v['perplexity_change']:+.1%}",
                 "KL": v.get("kl_divergence"), "top-1 agree": f"{v['top1_agreement']:.1%}"}
                for name, v in summary["compression"].items()]
        show(table("compressed variants (against the fine-tuned model)", rows))
    if "export" in summary:
        show(table("exported formats (parity against PyTorch)", export_rows(summary["export"])))
    if "serve" in summary:
        served = summary["serve"]
        Console().print(f"[bold]served[/] (openai client) -> {served['prompt'][:200]!r}")
        Console().print(served["reply"], highlight=False, markup=False)
        Console().print(f"p50 latency of a {served['latency_tokens']}-token reply: {served['p50_latency_ms']:.0f} ms; "
                        f"SIGTERM: {'drained and exited cleanly' if served['clean_shutdown'] else 'exit ' + str(served['exit_code'])}")
    from llmforge.eval.success import success_check

    show(table("success check", success_check(summary)))
    for name, path in summary["artifacts"].items():
        Console().print(f"  {name:>15}: {path}")


def export_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for fmt, m in metrics["formats"].items():
        rows.append({"format": fmt, "size MB": m["bytes"] / 1e6, "max |Δ logits|": m.get("max_abs_logits_diff"),
                     "top-1 agree": m.get("top1_agreement"), "greedy identical": m.get("greedy_identical"),
                     "tokens identical": m.get("tokenization_identical"),
                     **({"decode tok/s": m["decode_tokens_per_second"], "x PyTorch": m["speedup_vs_pytorch"]}
                        if "decode_tokens_per_second" in m else {}),
                     "parity": {True: "pass", False: "FAIL", None: "not measured"}[m.get("passed")]})
    return rows


def show_export(metrics: dict[str, Any], output_dir: Any) -> None:
    show(table(f"export: {output_dir} (parity on {metrics['parity_prompts']} prompts, "
               f"{metrics['parity_tokens']} greedy tokens)", export_rows(metrics)))
    for fmt, m in metrics["formats"].items():
        if m.get("llama_cpp"):
            Console().print(f"  {fmt}: llama.cpp {m['llama_cpp']}")


def show_loadtest(report: dict[str, Any]) -> None:
    rows = [{"latency": name, **{q: report[key][q] * 1e3 for q in ("p50", "p95", "p99")}}
            for name, key in (("time to first token (ms)", "ttft_s"), ("time per output token (ms)", "tpot_s"),
                              ("end to end (ms)", "e2e_s")) if report.get(key)]
    show(table(f"{report['model']} at {report['url']}: {report['requests']} requests, concurrency "
               f"{report['concurrency']}, {report['max_tokens']} tokens each", rows))
    Console().print(f"completed {report['completed']}   requests/s {report['requests_per_s']:.2f}   "
                    f"output tokens/s {report['output_tokens_per_s']:,.0f}   errors {report['errors'] or 'none'}")


def show_doctor(report: dict[str, Any]) -> None:
    show(table("versions", [{"package": k, "version": v or "not installed"} for k, v in report["versions"].items()]))
    show(table("devices", [{"": k, "value": v} for k, v in report["devices"].items()]))
    show(table("extras", [{"extra": k, "installed": "yes" if v else f"no: pip install 'llmforge[{k}]'"}
                          for k, v in report["extras"].items()]))


def show_markdown(text: str, html_path: Any) -> None:
    from rich.markdown import Markdown

    Console().print(Markdown(text))
    Console().print(f"report: {html_path}")


def show_estimate(est: dict[str, Any]) -> None:
    mem = est["memory_bytes"]
    rows = [
        {"": "parameters (total / trainable)", "value": f"{est['total_parameters']:,} / {est['trainable_parameters']:,}"},
        *({"": f"memory: {k}", "value": f"{v / 2**20:,.1f} MiB"} for k, v in mem.items()),
        {"": "steps per epoch", "value": est["steps_per_epoch"]},
        {"": f"time per step (median of {est['measured_steps']} measured)", "value": f"{est['seconds_per_step']:.2f} s"},
        {"": "time per epoch (estimate)", "value": f"{est['seconds_per_epoch'] / 60:.1f} min"},
    ]
    show(table("dry run: nothing was trained", rows))
