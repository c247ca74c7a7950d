"""Bench reports: a markdown table and a self-contained static HTML page with plots (no scripts).

A variant that failed (an `error` in its result) is listed under the table with its reason, never dropped."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

COLUMNS = (
    ("variant", lambda r: r["name"]),
    ("format", lambda r: r.get("format")),
    ("size MB", lambda r: r["artifact_bytes"] / 1e6),
    ("params M", lambda r: r["parameters"] / 1e6),
    ("load s", lambda r: r["load_seconds"]),
    ("TTFT ms", lambda r: r["ttft_ms"]["median"]),
    ("prefill tok/s", lambda r: r["prefill_tokens_per_second"]),
    ("decode tok/s (b=1)", lambda r: r["decode_tokens_per_second"].get("1")),
    ("decode tok/s (max b)", lambda r: max(r["decode_tokens_per_second"].values())),
    ("p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("p95 ms", lambda r: r["latency_ms"]["p95"]),
    ("peak RSS MB", lambda r: r["peak_rss_bytes"] / 1e6),
    ("GB/s (% roofline)", lambda r: (r.get("achieved_bandwidth_gbps"), r.get("roofline_fraction"))),
    ("perplexity", lambda r: r.get("perplexity")),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        gbps, frac = value
        return "-" if gbps is None else f"{gbps:.2f} ({frac:.0%})"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"
    return str(value)


def measured(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if not r.get("error")]


def failed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("error")]


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    return [[_cell(get(r)) for _, get in COLUMNS] for r in measured(results)]


def _note(results: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    ok = measured(results)
    if not ok:
        return "No variant could be measured."
    r0 = ok[0]
    note = (f"Prompt {r0['prompt_tokens']} tokens, {r0['new_tokens']} new tokens, greedy; medians of repeated runs "
            f"after warm-up. Machine read bandwidth {machine['read_bandwidth_gbps']:.1f} GB/s.")
    single = [r["name"] for r in ok if r.get("skipped_batch_sizes")]
    if single:
        note += f" Measured at batch 1 only (one sequence at a time in their runtime): {', '.join(single)}."
    return note


def _reason(r: dict[str, Any]) -> str:
    return " ".join(str(r["error"]).split())  # one line


def markdown(results: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    head = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    text = "\n".join(lines) + "\n\n" + _note(results, machine) + "\n"
    if failed(results):
        text += "\nFailed variants:\n\n" + "".join(f"- **{r['name']}** ({r['model']}): failed: {_reason(r)}\n"
                                                     for r in failed(results))
    return text


def _figure_png(draw: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _scatter(results: list[dict[str, Any]], y: Any, ylabel: str) -> Any:
    def draw(ax: Any) -> None:
        for r in results:
            ax.scatter(r["artifact_bytes"] / 1e6, y(r))
            ax.annotate(r["name"], (r["artifact_bytes"] / 1e6, y(r)), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("artifact size (MB)")
        ax.set_ylabel(ylabel)
    return draw


def _throughput(results: list[dict[str, Any]]) -> Any:
    def draw(ax: Any) -> None:
        for r in results:
            sizes = sorted(r["decode_tokens_per_second"], key=int)
            ax.plot([int(b) for b in sizes], [r["decode_tokens_per_second"][b] for b in sizes], "o-", label=r["name"])
        ax.set_xlabel("batch size")
        ax.set_ylabel("decode tokens/s")
        ax.legend()
    return draw


def plots(results: list[dict[str, Any]]) -> dict[str, str]:
    results = measured(results)
    if not results:
        return {}
    out = {
        "latency vs size": _figure_png(_scatter(results, lambda r: r["latency_ms"]["p50"], "p50 latency (ms)")),
        "throughput vs batch size": _figure_png(_throughput(results)),
    }
    if all(r.get("perplexity") for r in results):
        out["quality vs size"] = _figure_png(_scatter(results, lambda r: r["perplexity"], "perplexity"))
    return out


def page(results: list[dict[str, Any]], machine: dict[str, Any], title: str = "llmforge bench") -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows(results))
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}"><figcaption>'
        f"{html.escape(name)}</figcaption></figure>" for name, png in plots(results).items()
    )
    note = html.escape(_note(results, machine))
    failures = "".join(f"<li><b>{html.escape(r['name'])}</b> ({html.escape(r['model'])}): failed: "
                       f"{html.escape(_reason(r))}</li>" for r in failed(results))
    failures = f"<h2>Failed variants</h2><ul class=failed>{failures}</ul>" if failures else ""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        "td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:1rem}"
        f"</style></head><body><h1>{html.escape(title)}</h1><table><tr>{head}</tr>{body}</table>"
        f"<p>{note}</p>{failures}{figures}</body></html>"
    )


def write_report(results: list[dict[str, Any]], machine: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "report.md").write_text(markdown(results, machine), encoding="utf-8")
    (out_dir / "report.html").write_text(page(results, machine), encoding="utf-8")
