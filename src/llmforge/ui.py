"""Presentation for the CLI: progress, tables and messages. Library code never prints.

On a terminal: rich bars, tables and rules. In a log (output redirected): progress as plain lines with count,
total, rate and ETA; tables at their natural width; no colours. Data (paths, names, messages) is always printed
as given, never read as rich markup, so `llmforge[llamacpp]` stays `llmforge[llamacpp]`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)

# Not on a terminal (a redirected log), progress is a plain line every this many seconds, and tables use their
# natural width instead of being cut to 80 columns.
PROGRESS_SECONDS_ENV = "LLMFORGE_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10.0
_LOG_WIDTH = 10_000


def _stdout() -> Console:
    out = Console()
    return out if out.is_terminal else Console(width=_LOG_WIDTH)


def say(text: str) -> None:
    """Print data (paths, messages, values) to stdout exactly as given: never read as rich markup."""
    _stdout().print(text, markup=False, highlight=False, soft_wrap=True)


def stage(name: str) -> None:
    """A stage heading on stderr: a rule on a terminal, a plain line in a log."""
    if console.is_terminal:
        console.rule(f"[bold]{escape(name)}")
    else:
        _write_line(f"== {name} ==")


def _write_line(line: str) -> None:
    console.file.write(line + "\n")
    console.file.flush()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(description: str, done: int, total: int | None, elapsed: float, info: str = "",
                  finished: bool = False) -> str:
    """One progress line for a log: `perplexity: 84/200 (42%) | 12.5/s | elapsed 7s | ETA 9s | loss 2.31`."""
    count = f"{done:,}/{total:,} ({done / total:.0%})" if total else f"{done:,}"
    parts = [f"{description}: {count}"]
    rate = done / elapsed if elapsed > 0 else None
    if rate is not None:
        parts.append(f"{rate:,.3g}/s" if rate < 100 else f"{rate:,.0f}/s")
    if finished:
        parts.append(f"done in {_duration(elapsed)}")
    else:
        parts.append(f"elapsed {_duration(elapsed)}")
        if total and rate:
            parts.append(f"ETA {_duration(max(total - done, 0) / rate)}")
    if info:
        parts.append(info)
    return " | ".join(parts)


class LogProgress:
    """Progress for a log file: a line when a phase begins, every `every` seconds while it runs, and at its end."""

    def __init__(self, description: str, total: int | None = None, *, every: float = DEFAULT_PROGRESS_SECONDS,
                 write: Callable[[str], None] = _write_line, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.write, self.clock = every, write, clock
        self.description, self.total = description, total
        self.done, self.info, self.open = 0, "", False
        self.started = self.last = clock()

    def begin(self, description: str, total: int | None) -> None:
        self.finish()
        self.description, self.total, self.done, self.info = description, total, 0, ""
        self.started = self.last = self.clock()
        self.open = True
        self.write(f"{description}: started" + (f", {total:,} to do" if total else ""))

    def __call__(self, n: int = 1) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int) -> None:
        if not self.open:  # no begin(): the phase is the one given at construction, timed from then
            self.open = True
        self.done = done
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.write(progress_line(self.description, self.done, self.total, now - self.started, self.info))

    def set_info(self, info: str) -> None:
        self.info = info

    def finish(self) -> None:
        if self.open:
            self.open = False
            elapsed = self.clock() - self.started
            self.write(progress_line(self.description, self.done, self.total, elapsed, self.info, finished=True))


class BarProgress:
    """The same reporter drawn as rich bars on a terminal, one bar per phase. The live display starts with the
    first phase and stops at `finish()`, so a stage that trains in between (with its own bar) does not clash."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total = description, total
        self.bar: Progress | None = None
        self.task: Any = None

    def begin(self, description: str, total: int | None) -> None:
        if self.bar is None:
            self.bar = _progress()
            self.bar.start()
        self.task = self.bar.add_task(escape(description), total=total, info="")

    def __call__(self, n: int = 1) -> None:
        if self.task is None:
            self.begin(self.description, self.total)
        self.bar.advance(self.task, n)  # type: ignore[union-attr]

    def advance_to(self, done: int) -> None:
        if self.task is None:
            self.begin(self.description, self.total)
        self.bar.update(self.task, completed=done)  # type: ignore[union-attr]

    def set_info(self, info: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, info=escape(info))  # type: ignore[union-attr]

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar, self.task = None, None


class _Both:
    """Bars on the terminal (stderr) and lines in the log that stdout is redirected to."""

    def __init__(self, *reporters: Any) -> None:
        self.reporters = reporters

    def __getattr__(self, name: str) -> Any:  # begin, advance_to, set_info, finish: to each reporter
        def each(*args: Any) -> None:
            for r in self.reporters:
                getattr(r, name)(*args)

        return each

    def __call__(self, n: int = 1) -> None:
        for r in self.reporters:
            r(n)


def _writer(stream: Any) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write


def reporter(description: str, total: int | None = None) -> Any:
    """A progress reporter for where output goes: rich bars on a terminal (stderr), a plain line every
    LLMFORGE_PROGRESS_SECONDS (default 10) with count/total, rate and ETA in a log; both when only stdout is
    redirected, so that `llmforge train > train.log` keeps its progress too."""
    if not console.is_terminal:
        return LogProgress(description, total, every=_log_every())
    bars = BarProgress(description, total)
    if _stdout().is_terminal:
        return bars
    # The stream itself, not `sys.stdout` at write time: a live rich display swaps that for its own.
    return _Both(bars, LogProgress(description, total, every=_log_every(), write=_writer(sys.stdout)))


def _log_every() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS)))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield a progress reporter (see llmforge.progress): rich bars on a terminal, plain lines in a log."""
    shown = reporter(description, total)
    try:
        yield shown
    finally:
        shown.finish()


def hooks() -> Any:
    """The terminal's `llmforge.progress.Hooks`: stage headings, a progress bar per piece of work, training progress."""
    from llmforge.progress import Hooks

    return Hooks(stage=stage, progress=progress_bar, train_callbacks=lambda: [train_progress()])


def train_progress() -> Any:
    """A TrainerCallback that shows steps, loss and learning rate: a rich bar, or log lines when not a terminal."""
    from transformers import TrainerCallback

    class TrainProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.reporter: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.reporter = reporter("training", state.max_steps)
            self.reporter.begin("training", state.max_steps)
            if state.global_step:  # resumed: start the count where the checkpoint left off
                self.reporter.advance_to(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.reporter:
                self.reporter.advance_to(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if self.reporter and logs and "loss" in logs:
                info = f"loss {logs['loss']:.3f}" + (f" lr {logs['learning_rate']:.2e}"
                                                     if isinstance(logs.get("learning_rate"), float) else "")
                self.reporter.set_info(info)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.reporter:
                self.reporter.finish()
            self.reporter = None

    return TrainProgress()


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=Text(title))  # titles and headers hold paths and names: text, never rich markup
    keys = list(dict.fromkeys(k for row in rows for k in row))  # every column any row has, in order
    for key in keys:
        t.add_column(Text(str(key)))
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
    _stdout().print(renderable)


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
    if report.get("system_folded"):
        rows.append({"": "system message folded into the first user turn (template has no system role)",
                     "value": report["system_folded"]})
    show(table(f"prepared dataset{' (cached)' if cached else ''}: {output_dir}", rows))
    for split, source in report.get("split_sources", {}).items():  # where each split came from, how it was cut
        say(f"  {split}: {source}")
    show_rejects(Path(output_dir) / "rejects.jsonl")


def show_rejects(path: Path, shown: int = 10) -> None:
    """The first `shown` skipped records of a rejects file, and how many more it holds (it holds them all)."""
    from llmforge.errors import Problem

    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        first = [Problem(**json.loads(line)) for line in islice(f, shown)]
        more = sum(1 for _ in f)
    say(f"skipped {len(first) + more:,} invalid record(s), all listed in {path}:")
    for problem in first:
        say(f"  - {problem}")
    if more:
        say(f"  ... and {more:,} more")


def show_preview(prepared: Any, model_cfg: Any, n: int) -> None:
    from rich.text import Text

    from llmforge.data.preview import preview
    from llmforge.models.loader import load_tokenizer

    out = _stdout()
    for i, runs in enumerate(preview(prepared, load_tokenizer(model_cfg), n)):
        if out.is_terminal:
            out.rule(f"sample {i}  ([green]trained[/] / [dim]context[/])")
        else:  # a log has no colours: mark the trained part in the text itself
            say(f"== sample {i} (trained tokens between ⟦ and ⟧) ==")
        text = Text()
        for piece, trainable in runs:
            if out.is_terminal:
                text.append(piece, style="bold green" if trainable else "dim")
            else:
                text.append(f"⟦{piece}⟧" if trainable else piece)
        out.print(text, soft_wrap=True)


def show_metrics(title: str, metrics: dict[str, Any], output_dir: Any) -> None:
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (dict, list))]
    show(table(f"{title}: {output_dir}", rows))
    if metrics.get("perplexity_by_script"):
        show(table("perplexity by script (token-weighted)",
                   [{"script": s, **m} for s, m in metrics["perplexity_by_script"].items()]))
    if metrics.get("rag"):
        show_rag(metrics["rag"])


def show_rag(rag: dict[str, Any]) -> None:
    k = rag["top_k"]
    retrieval = {m: rag[m] for m in (f"hit_rate@{k}", f"mrr@{k}") if m in rag}
    rows = [{"answers": "with rag", **rag["with_rag"], **retrieval}, {"answers": "without rag", **rag["without_rag"]}]
    show(table(f"rag: {rag['questions']} questions ({rag['qa']}), top {k} from {rag['index']}", rows))


def show_summary(summary: dict[str, Any], total_seconds: float | None = None) -> None:
    if "eval_pairs" in summary:  # a preference pipeline: pairs scored, not perplexity
        keys = ("logp_accuracy", "logp_margin", "reward_accuracy", "reward_margin")
        rows = [{"model": model, **{k: summary.get(f"{prefix}_{k}") for k in keys}}
                for model, prefix in (("base", "base"), ("fine-tuned", "finetuned"))]
        show(table(f"{summary['name']}: {summary['eval_pairs']} held-out '{summary['eval_split']}' preference pairs "
                   f"(reward against {summary.get('reference') or 'no reference'})", rows))
        headline = f"reward accuracy: [bold]{summary.get('finetuned_reward_accuracy', float('nan')):.1%}[/]   "
    else:
        rows = [
            {"model": "base", "perplexity": summary["base_perplexity"]},
            {"model": "fine-tuned", "perplexity": summary["finetuned_perplexity"]},
        ]
        show(table(f"{summary['name']}: held-out '{summary['eval_split']}' perplexity "
                   f"({summary['scored_tokens']:,} response tokens)", rows))
        headline = f"perplexity reduction: [bold]{summary['perplexity_reduction']:.1%}[/]   "
    _stdout().print(
        headline +
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
        say(f"served (openai client) -> {served['prompt'][:200]!r}")
        say(served["reply"])
        say(f"p50 latency of a {served['latency_tokens']}-token reply: {served['p50_latency_ms']:.0f} ms; "
            f"SIGTERM: {'drained and exited cleanly' if served['clean_shutdown'] else 'exit ' + str(served['exit_code'])}")
    from llmforge.eval.success import success_check

    show(table("success check", success_check(summary)))
    for name, path in summary["artifacts"].items():
        say(f"  {name:>15}: {path}")


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
            say(f"  {fmt}: llama.cpp {m['llama_cpp']}")


def show_loadtest(report: dict[str, Any]) -> None:
    rows = [{"latency": name, **{q: report[key][q] * 1e3 for q in ("p50", "p95", "p99")}}
            for name, key in (("time to first token (ms)", "ttft_s"), ("time per output token (ms)", "tpot_s"),
                              ("end to end (ms)", "e2e_s")) if report.get(key)]
    show(table(f"{report['model']} at {report['url']}: {report['requests']} requests, concurrency "
               f"{report['concurrency']}, {report['max_tokens']} tokens each", rows))
    say(f"completed {report['completed']}   requests/s {report['requests_per_s']:.2f}   "
        f"output tokens/s {report['output_tokens_per_s']:,.0f}   errors {report['errors'] or 'none'}")


def show_doctor(report: dict[str, Any]) -> None:
    show(table("versions", [{"package": k, "version": v or "not installed"} for k, v in report["versions"].items()]))
    show(table("devices", [{"": k, "value": v} for k, v in report["devices"].items()]))
    show(table("what 'auto' picks here", [{"": k, "value": v} for k, v in report["auto"].items()]))
    show(table("extras", [{"extra": k, "installed": "yes" if v else f"no: pip install 'llmforge[{k}]'"}
                          for k, v in report["extras"].items()]))


def show_markdown(text: str, html_path: Any) -> None:
    from rich.markdown import Markdown

    out = Console()
    if out.is_terminal:
        out.print(Markdown(text))
    else:  # a log: the markdown source itself is the readable form, at any width
        say(text)
    say(f"report: {html_path}")


def show_estimate(est: dict[str, Any]) -> None:
    mem = est["memory_bytes"]
    rows = [
        {"": "parameters (total / trainable)", "value": f"{est['total_parameters']:,} / {est['trainable_parameters']:,}"},
        *({"": f"memory: {k}", "value": f"{v / 2**20:,.1f} MiB"} for k, v in mem.items()),
        {"": f"gradient checkpointing (largest batch: {est['longest_sample_tokens']} tokens per sample)",
         "value": "on" if est["gradient_checkpointing"] else "off"},
        {"": "steps per epoch", "value": est["steps_per_epoch"]},
        {"": f"time per step (median of {est['measured_steps']} measured)", "value": f"{est['seconds_per_step']:.2f} s"},
        {"": "time per epoch (estimate)", "value": f"{est['seconds_per_epoch'] / 60:.1f} min"},
    ]
    show(table("dry run: nothing was trained", rows))


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def show_models(rows: list[dict[str, Any]]) -> None:
    """`llmforge models`: a rich table on a terminal, aligned plain text in a log or a pipe."""
    a = rows[0]["assumptions"] if rows else {}
    title = (f"model presets: memory at {a.get('dtype')}, batch {a.get('batch')} x {a.get('seq_len')} tokens, "
             f"LoRA r{a.get('lora_rank')} {a.get('lora_targets')}, {a.get('optimizer')}")
    cells = [{"name": r["name"], "hub id": r["hub_id"], "params": _params(r["parameters"]),
              "context": f"{r['context']:,}", "inference": _gib(r["memory_bytes"]["inference"]),
              "LoRA": _gib(r["memory_bytes"]["lora"]), "full FT": _gib(r["memory_bytes"]["full"]),
              "source": (f"pulled: {r['pulled']}" if r["pulled"] else
                         f"llmforge pull {r['name']}" if r["source"] != "hub" else "hub"),
              "use case": r["use_case"]} for r in rows]
    out = _stdout()
    if out.is_terminal:
        show(table(title, cells))
        return
    keys = list(cells[0]) if cells else []
    widths = {k: max(len(k), *(len(c[k]) for c in cells)) for k in keys[:-1]}
    lines = [title, "  ".join(k.ljust(widths.get(k, 0)) for k in keys).rstrip()]
    lines += ["  ".join(c[k].ljust(widths.get(k, 0)) for k in keys).rstrip() for c in cells]
    say("\n".join(lines))


def show_families() -> None:
    """`llmforge families`: the families x stages table, each refusal with its reason."""
    from llmforge.models.families import FAMILIES, STAGE_TITLES, STAGES, cell

    rows = [{"family": f.name, "template": f.template, **{STAGE_TITLES[s]: cell(f, s) for s in STAGES}}
            for f in FAMILIES]
    show(table("model families: what each stage supports (llmforge families --markdown for the README)", rows))
