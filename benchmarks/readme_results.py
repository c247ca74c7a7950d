"""Write the README's results tables from measured runs (never typed by hand).

    python benchmarks/readme_results.py [runs/demo] [--total-seconds N]

Reads `runs/demo/summary.json` (written by `make demo`), the shipped base model's provenance, and whatever the
bench scripts left in benchmarks/results/ (prepare.json, train_throughput.json, compress*.md, variants.md), and
replaces the block between `<!-- results:start -->` and `<!-- results:end -->` in README.md; from
`runs/demo-real/summary.json` (`make demo-real`) it replaces the block between `<!-- real-results:start -->` and
`<!-- real-results:end -->`. Either block is left as it is when its summary is missing. benchmarks/real_model.py's
`real_model.md` fills `<!-- real-bench:start -->` on its own, benchmarks/playground_cost.py's JSON
`<!-- playground-cost:start -->` and benchmarks/structured.py's table `<!-- structured:start -->`. The model-families table
(`<!-- families:start -->`) is rendered from `llmforge.models.families`, the registry the family matrix test
checks; `--families-only` writes just that block.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _answer_rows(s: dict) -> list[tuple[str, str]]:
    gen = s.get("generation")
    if not gen:
        return []
    b, f = gen["base"], gen["finetuned"]
    n = b["generated_samples"]
    rows = [(f"answers to {n} held-out prompts: ROUGE-L, base -> fine-tuned", f"{b['rougeL']:.3f} -> {f['rougeL']:.3f}")]
    if "syntax_valid" in b:
        rows.append(("answers that parse as Python, base -> fine-tuned",
                     f"{b['syntax_valid']:.0%} -> {f['syntax_valid']:.0%}"))
    return rows


def _lifecycle_rows(s: dict) -> list[tuple[str, str]]:
    rows = []
    for name, v in s.get("compression", {}).items():
        rows.append((f"compressed `{name}`: size, perplexity vs the fine-tuned model, KL, top-1 agreement",
                     f"{v['size_bytes'] / 1e6:.1f} MB ({v['size_ratio']:.0%}), {v['perplexity']:.2f} "
                     f"({v['perplexity_change']:+.1%}), {v['kl_divergence']:.3f}, {v['top1_agreement']:.1%}"))
    for fmt, v in s.get("export", {}).get("formats", {}).items():
        parity = {True: "pass", False: "FAIL", None: "not measured"}[v.get("passed")]
        diff = f", max abs logits diff {v['max_abs_logits_diff']:.2g}" if "max_abs_logits_diff" in v else ""
        greedy = f", greedy identical: {'yes' if v['greedy_identical'] else 'no'}" if "greedy_identical" in v else ""
        rows.append((f"export `{fmt}`: size, parity", f"{v['bytes'] / 1e6:.1f} MB, {parity}{diff}{greedy}"))
    if "serve" in s:
        rows.append(("served (openai client): p50 latency of a 32-token reply, SIGTERM exit",
                     f"{s['serve']['p50_latency_ms']:.0f} ms, {'clean' if s['serve']['clean_shutdown'] else 'NOT clean'}"))
    if "size_reduction" in s:
        rows.append(("size reduction, smallest variant (target > 50%)", f"**{s['size_reduction']:.0%}**"))
    if "inference_speedup" in s:
        rows.append(("decode speedup, fastest CPU export vs PyTorch fp32 (target > 3x)",
                     f"**{s['inference_speedup']:.2f}x**"))
    return rows


def table(summary: dict, provenance: dict, total_seconds: float | None) -> str:
    s = summary
    rows = [
        ("base model (pretrained by llmforge)", f"{provenance['total_parameters'] / 1e6:.1f}M params, "
         f"{provenance['pretrain_tokens'] / 1e6:.1f}M stdlib tokens, {provenance['pretrain_steps']} steps"),
        ("fine-tuning samples (train / validation / test)",
         " / ".join(f"{s['samples'][k]:,}" for k in ("train", "validation", "test"))),
        (f"held-out perplexity, base ({s['scored_tokens']:,} response tokens)", f"{s['base_perplexity']:.2f}"),
        ("held-out perplexity, LoRA fine-tuned", f"{s['finetuned_perplexity']:.2f}"),
        ("perplexity reduction (target > 15%)", f"**{s['perplexity_reduction']:.1%}**"),
        *_answer_rows(s),
        ("LoRA training throughput", f"{s['train_tokens_per_second']:,.0f} tokens/s"),
        ("LoRA training time", f"{s['train_runtime_seconds']:.0f} s"),
        ("pipeline time (prepare, 2 evals, train)", f"{s['wall_seconds']:.0f} s"),
    ]
    rows += _lifecycle_rows(s)
    rows.append(("`llmforge demo` wall time (data, prepare, 2 evals, train, compress, export, serve)",
                 f"{s.get('demo_seconds', 0):.0f} s"))
    if total_seconds is not None:
        rows.append(("`make demo` wall time on a fresh clone (venv install included)", f"**{total_seconds / 60:.1f} min**"))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Demo results ({machine}; written by `benchmarks/readme_results.py` from `runs/demo/summary.json`"
             + (", the run of a fresh clone's `make demo`, pip cache warm" if total_seconds is not None else "")
             + "):", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def real_table(s: dict, total_seconds: float | None, note: str | None = None) -> str:
    """The real-model block, from `runs/demo-real/summary.json` (`make demo-real`)."""
    code, probe, met = s["code_tasks"], s["general_probe"], s["targets"]
    ok = {True: "met", False: "**not met**"}
    n = s["samples"]
    rows = [
        ("model", "SmolLM2-135M-Instruct, LoRA r16 all-linear, fp32, 1 epoch"),
        ("generated docstring -> function tasks (train / validation / test, held out by task)",
         " / ".join(f"{n[k]:,}" for k in ("train", "validation", "test"))),
        (f"held-out response perplexity, base -> fine-tuned ({s['scored_tokens']:,} tokens)",
         f"{s['base_perplexity']:.3f} -> {s['finetuned_perplexity']:.3f}"),
        ("perplexity reduction (target >= 15%)",
         f"**{s['perplexity_reduction']:.1%}** ({ok[met['perplexity_reduction_at_least_15pct']]})"),
        (f"pass rate on {code['held_out_tasks']} held-out tasks ({code['tests_per_task']} tests each, "
         "sandboxed subprocess), base -> fine-tuned",
         f"**{code['base_pass_rate']:.1%} -> {code['finetuned_pass_rate']:.1%}** ({ok[met['pass_rate_improved']]})"),
        (f"general probe ({probe['items']} prompts: facts, arithmetic, formatting), base -> fine-tuned",
         f"{probe['base_score']:.1%} -> {probe['finetuned_score']:.1%} (lost {len(probe['lost'])}, gained "
         f"{len(probe['gained'])}; kept: {ok[met['general_ability_kept']]})"),
        ("LoRA training", f"{s['train_runtime_seconds']:.0f} s, {s['train_tokens_per_second']:,.0f} tokens/s"),
        ("`llmforge demo --real` wall time (data, prepare, 2 perplexity evals, train, 2 x pass rate + probe)",
         f"{s['demo_seconds'] / 60:.1f} min"),
    ]
    if total_seconds is not None:
        rows.append(("`make demo-real` wall time (venv already installed)", f"**{total_seconds / 60:.1f} min**"))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = ["", f"Real model ({machine}; `make demo-real`, written by `benchmarks/readme_results.py` from "
             f"`runs/demo-real/summary.json`{'; ' + note if note else ''}):", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def bench_sections() -> str:
    results = ROOT / "benchmarks" / "results"
    parts = []
    prep = results / "prepare.json"
    if prep.exists():
        p = json.loads(prep.read_text())
        n = p["records"]
        note = f" {p['note']}." if p.get("note") else ""
        parts += ["", f"Data preparation, {n:,} synthetic Alpaca records (`benchmarks/prepare.py`).{note}", "",
                  "| | seconds | records/s | vs baseline |", "|---|---|---|---|",
                  f"| `datasets.map` tokenization (baseline) | {p['baseline_seconds']:.1f} | "
                  f"{n / p['baseline_seconds']:,.0f} | 1.00x |",
                  f"| `llmforge prepare` (validate, split, template, mask) | {p['cold_seconds']:.1f} | "
                  f"{n / p['cold_seconds']:,.0f} | {p['baseline_seconds'] / p['cold_seconds']:.2f}x |",
                  f"| `llmforge prepare`, cached | {p['cached_seconds']:.2f} | {n / p['cached_seconds']:,.0f} | "
                  f"{p['baseline_seconds'] / p['cached_seconds']:,.0f}x |"]
    train = results / "train_throughput.json"
    if train.exists():
        t = json.loads(train.read_text())
        parts += ["", f"LoRA training, {t['records']:,} demo records, {t['epochs']} epoch, batch {t['batch']}, "
                  f"r={t['lora_r']} (`benchmarks/train_throughput.py`):", "",
                  "| | wall s | real tokens/s | held-out response loss |", "|---|---|---|---|"]
        for name, label in (("seed", "seed recipe (pad to max_length, HF Trainer)"), ("llmforge", "llmforge train")):
            r = t[name]
            parts.append(f"| {label} | {r['seconds']:.0f} | {r['real_tokens'] / r['seconds']:,.0f} | "
                         f"{r['held_out_response_loss']:.3f} |")
        parts.append(f"| **speedup** | **{t['speedup_wall']:.1f}x** | | |")
    for name, title in (("compress-smollm2", "Compression of a real model: SmolLM2-135M-Instruct as fine-tuned by "
                         "`make demo-real`, on its held-out tasks (`benchmarks/compress.py --variants real --exports`)"),
                        ("compress", "Compression of the demo fine-tuned model (`benchmarks/compress.py`)"),
                        ("export", "Export formats of the demo fine-tuned model (`benchmarks/export.py`)"),
                        ("serve", "Serving under load (`benchmarks/serve.py`)")):
        if (results / f"{name}.md").exists():
            parts += ["", f"{title}:", "", (results / f"{name}.md").read_text().strip()]
    variants = results / "variants.md"
    if variants.exists():
        parts += ["", "Variants (`llmforge bench` on the demo artifacts; report.html has the plots):", "",
                  variants.read_text().strip()]
    return "\n".join(parts)


def playground_cost(c: dict) -> str:
    """The playground's cost against Gradio's, from benchmarks/playground_cost.py's JSON."""
    ours, g = c["llmforge"], c["gradio"]
    mb = 1e6
    rows = [f"Measured by `benchmarks/playground_cost.py` on {c['cpu']} ({c['cpus']} cores), {c['date'][:10]}; "
            f"Gradio {g.get('version', '-')} in a throwaway venv.", "",
            "| | llmforge `--ui` | Gradio | Gradio / llmforge |", "|---|---|---|---|"]
    if not g.get("available"):
        return "\n".join(rows[:1] + ["", f"Gradio could not be measured here: {g.get('why', 'not installed')}."])
    rows += [
        f"| Python packages added | {ours['extra_packages_count']} | {g['extra_packages_count']} | |",
        f"| installed size added | {ours['static_bytes'] / mb:.2f} MB (the page's files, "
        f"{ours['static_gzip_bytes'] / 1e3:.0f} kB gzipped) | {g['extra_installed_bytes'] / mb:.1f} MB | "
        f"{g['extra_installed_bytes'] / ours['static_bytes']:,.0f}x |",
        f"| start cost of the UI | {1e3 * ours['create_app_s_ui_extra']:.0f} ms (mounting it on the app) | "
        f"{g['import_s']:.2f} s (`import gradio`) | {g['import_s'] / max(ours['create_app_s_ui_extra'], 1e-3):,.0f}x |",
        f"| process start to first page | {ours['ready_s_ui']:.1f} s (server with the demo model loaded) | "
        f"{g['ready_s']:.1f} s (an echo ChatInterface, no model) | |",
    ]
    return "\n".join(rows)


def rag_index(r: dict) -> str:
    """benchmarks/rag_index.py's recall and latency per index."""
    st = r["setup"]
    embed = f", embedded in {st['embed_s'] / 60:.0f} min" if st.get("embed_s") else ""
    rows = [f"{st['vectors']:,} embedded chunks ({st['chunks']}; {st['encoder']} in {st['encoder_precision']}"
            f"{embed}) of {st['dim']} dims, {st['queries']} queries ({st['queries_note']}), recall@{st['k']} against "
            f"exact search, one query at a time, FAISS {st['faiss']} on {st['cpu']} ({st['faiss_threads']} threads); "
            f"embedding the query itself: {st['encode_one_query_ms']:.0f} ms.", "",
            "| index | settings | recall@10 | p50 ms | p95 ms | build s |", "|---|---|---|---|---|---|"]
    for x in r["rows"]:
        settings = ", ".join(f"{k} {v}" for k, v in x.items()
                             if k not in ("index", "recall_at_10", "p50_ms", "p95_ms", "build_s"))
        rows.append(f"| {x['index']} | {settings or '-'} | {x['recall_at_10']:.3f} | {x['p50_ms']:.2f} | "
                    f"{x['p95_ms']:.2f} | {x['build_s']:.1f} |")
    return "\n".join(rows)


def rag_eval(r: dict) -> str:
    """benchmarks/rag_eval.py's retrieval and answer quality on the real model."""
    st, k = r["setup"], r["setup"]["top_k"]
    rows = [f"`eval --rag` on {st['model']} ({st['runtime']}), {st['questions']} questions derived from the docstrings "
            f"of {len(st['modules'])} stdlib modules ({st['index']['chunks']:,} chunks of 200 tokens), top {k}; "
            f"{st['cpu']}:", "",
            f"| | hit rate@{k} | MRR@{k} | answer recall | ROUGE-L |", "|---|---|---|---|---|",
            f"| retrieval, question names the function | {r['named'][f'hit_rate@{k}']:.3f} | "
            f"{r['named'][f'mrr@{k}']:.3f} | | |",
            f"| retrieval, docstring sentence only (no name) | {r['described'][f'hit_rate@{k}']:.3f} | "
            f"{r['described'][f'mrr@{k}']:.3f} | | |",
            f"| answers without retrieval | | | {r['without_rag']['answer_recall']:.3f} | "
            f"{r['without_rag']['rougeL']:.3f} |",
            f"| answers with the top {k} passages | | | {r['with_rag']['answer_recall']:.3f} | "
            f"{r['with_rag']['rougeL']:.3f} |"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--total-seconds", type=float, default=None, help="measured `make demo` wall time")
    parser.add_argument("--real", type=Path, default=ROOT / "runs" / "demo-real",
                        help="the real-model demo's run dir (its block is left out when it has no summary.json)")
    parser.add_argument("--real-total-seconds", type=float, default=None, help="measured `make demo-real` wall time")
    parser.add_argument("--real-note", default=None, help="how the real run was measured (CPU, other load)")
    parser.add_argument("--families-only", action="store_true", help="rewrite only the model-families table")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    if args.families_only:
        pass
    elif (args.run_dir / "summary.json").exists():
        summary = json.loads((args.run_dir / "summary.json").read_text())
        provenance = json.loads((ROOT / "src/llmforge/assets/demo-base/provenance.json").read_text())
        body = table(summary, provenance, args.total_seconds) + "\n" + bench_sections()
        text = _replace_block(text, "results", body)
    if not args.families_only and (args.real / "summary.json").exists():  # its own block: `make demo-real` runs apart from `make demo`
        body = real_table(json.loads((args.real / "summary.json").read_text()), args.real_total_seconds,
                          args.real_note).strip()
        text = _replace_block(text, "real-results", body)
    real_bench = ROOT / "benchmarks" / "results" / "real_model.md"
    if not args.families_only and real_bench.exists():  # its own block: written by benchmarks/real_model.py alone
        text = _replace_block(text, "real-bench", "SmolLM2-135M-Instruct against what users run instead: the seed's "
                              "LoRA recipe, PyTorch decoding, the seed-style server and llama.cpp's own server "
                              "(`benchmarks/real_model.py`):\n\n" + real_bench.read_text().strip())
    rag = ROOT / "benchmarks" / "results" / "rag_index.json"
    if not args.families_only and rag.exists():  # its own block: written by benchmarks/rag_index.py
        text = _replace_block(text, "rag-index", rag_index(json.loads(rag.read_text())))
    rag_answers = ROOT / "benchmarks" / "results" / "rag_eval.json"
    if not args.families_only and rag_answers.exists():  # its own block: written by benchmarks/rag_eval.py
        text = _replace_block(text, "rag-eval", rag_eval(json.loads(rag_answers.read_text())))
    structured = ROOT / "benchmarks" / "results" / "structured.md"
    if not args.families_only and structured.exists():  # its own block: written by benchmarks/structured.py
        text = _replace_block(text, "structured", structured.read_text().strip())
    cost = ROOT / "benchmarks" / "results" / "playground_cost.json"
    if not args.families_only and cost.exists():  # its own block: written by benchmarks/playground_cost.py
        text = _replace_block(text, "playground-cost", playground_cost(json.loads(cost.read_text())))
    from llmforge.models.families import markdown_table

    text = _replace_block(text, "families", markdown_table())  # the registry the family matrix test checks
    readme.write_text(text)


def _replace_block(text: str, name: str, body: str) -> str:
    block = f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->"
    print(block)
    return re.sub(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", lambda _: block, text, flags=re.S)


if __name__ == "__main__":
    main()
