"""The tables of benchmarks/real_model.py: one table of ratios against the baselines, then each part's details."""

from __future__ import annotations

from typing import Any

OK = {True: "met", False: "**not met**", None: "-"}
LLMFORGE, SEED = "llmforge serve (defaults)", "seed-style server (pipeline() per request)"
GGUF_OURS, LLAMA = "llmforge serve, GGUF q8_0, backend=llamacpp", "llama.cpp llama-server, GGUF q8_0"


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _serve_rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result.get("serve", {}).get("rows", []) if "error" not in r}


def _tok_s(row: dict[str, Any]) -> float:
    return row["concurrent"]["tokens_per_s"]


def _p99(row: dict[str, Any]) -> float:
    return row["concurrent"]["e2e_ms"]["p99"]


def _single(row: dict[str, Any]) -> float:
    return row["single"]["e2e_ms"]["p50"]


def ratios(result: dict[str, Any]) -> str:
    """| comparison | llmforge | baseline | ratio | target | met |, for every part that was measured."""
    rows: list[tuple[str, str, str, str, str, str]] = []
    if t := result.get("train"):
        s, o = t["seed"], t["llmforge"]
        equal_loss = o["held_out_response_loss"] <= s["held_out_response_loss"]
        rows.append((f"LoRA wall time, seed recipe / llmforge ({t['records']} records, {o['steps']} vs {s['steps']} "
                     "steps)", f"{o['seconds']:.0f} s", f"{s['seconds']:.0f} s", f"{t['speedup_wall']:.2f}x",
                     ">= 3x at equal or lower loss", OK[t["speedup_wall"] >= 3 and equal_loss]))
        rows.append(("held-out response loss (llmforge vs seed)", f"{o['held_out_response_loss']:.4f}",
                     f"{s['held_out_response_loss']:.4f}", "-", "equal or lower", OK[equal_loss]))
    if d := result.get("decode"):
        fp32 = next((r for r in d["rows"] if r["name"] == "PyTorch fp32"), {})
        for r in d["rows"]:
            if "error" in r or r["name"] == "PyTorch fp32":
                continue
            for b in ("b1", "b8"):
                if f"speedup_{b}" in r:
                    rows.append((f"decode {b.replace('b', 'batch ')}: {r['name']} / PyTorch fp32",
                                 f"{r[b]:,.1f} tok/s", f"{fp32[b]:,.1f} tok/s", f"{r[f'speedup_{b}']:.2f}x", "-", "-"))
    serve = _serve_rows(result)
    ours, seed, gguf, llama = (serve.get(n) for n in (LLMFORGE, SEED, GGUF_OURS, LLAMA))
    if ours and seed:
        ratio = _tok_s(ours) / _tok_s(seed)
        rows.append(("serving tok/s at 16 clients: llmforge / seed-style", f"{_tok_s(ours):,.0f}",
                     f"{_tok_s(seed):,.0f}", f"{ratio:.2f}x", ">= 4x, lower p99",
                     OK[ratio >= 4 and _p99(ours) < _p99(seed)]))
    for label, row in (("llmforge (defaults)", ours), ("llmforge llamacpp backend", gguf)):
        if row and llama:
            ratio = _tok_s(row) / _tok_s(llama)
            rows.append((f"serving tok/s at 16 clients: {label} / llama-server", f"{_tok_s(row):,.0f}",
                         f"{_tok_s(llama):,.0f}", f"{ratio:.2f}x", ">= 1x, lower p99",
                         OK[ratio >= 1 and _p99(row) < _p99(llama)]))
            rows.append((f"p99 at 16 clients: {label} vs llama-server", f"{_p99(row):,.0f} ms",
                         f"{_p99(llama):,.0f} ms", f"{_p99(row) / _p99(llama):.2f}x", "lower", OK[_p99(row) < _p99(llama)]))
            per_token = _single(row) / _single(llama)
            rows.append((f"single-request latency per token: {label} / llama-server",
                         f"{_single(row) / 32:.0f} ms", f"{_single(llama) / 32:.0f} ms", f"{per_token:.2f}x",
                         "<= 1.5x", OK[per_token <= 1.5]))
    for label, row in (("llmforge (defaults)", ours), ("llmforge llamacpp backend", gguf)):
        if row:
            rows.append((f"single-request p50, 32 tokens: {label}", f"{_single(row):,.0f} ms", "-", "-", "< 500 ms",
                         OK[_single(row) < 500]))
    head = "| comparison | llmforge | baseline | ratio | target | |\n|---|---|---|---|---|---|\n"
    return head + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _load(part: dict[str, Any]) -> str:
    start, end = part["load_average_start"], part["load_average_end"]
    return (f"{part['started']}, {part['seconds'] / 60:.1f} min, load average (1/5/15 min) "
            f"{'/'.join(f'{x:.1f}' for x in start)} at start, {'/'.join(f'{x:.1f}' for x in end)} at end")


def _train(t: dict[str, Any]) -> list[str]:
    lines = [f"**LoRA fine-tuning** ({_load(t)}):", "",
             f"{t['records']} training records (generated code tasks), {t['test_records']} held out, {t['epochs']} "
             f"epoch, batch {t['batch']}, LoRA r={t['lora_r']} all-linear, lr {t['learning_rate']}, max_length "
             f"{t['max_length']}.", "",
             "| recipe | train wall s | steps | real tokens/s | processed tokens/s | held-out response loss |",
             "|---|---|---|---|---|---|"]
    for key, label in (("seed", "seed (Alpaca text padded to max_length, LM collator, Trainer, fp32)"),
                       ("llmforge", "llmforge prepare + train (defaults)")):
        r = t[key]
        lines.append(f"| {label} | {r['seconds']:.0f} | {r['steps']} | {r['real_tokens'] / r['seconds']:,.0f} | "
                     f"{r['processed_tokens'] / r['seconds']:,.0f} | {r['held_out_response_loss']:.4f} |")
    return lines


def _decode(d: dict[str, Any]) -> list[str]:
    lines = [f"**Decode** ({_load(d)}):", "",
             f"Greedy, {d['prompt_tokens']}-token prompt, {d['new_tokens']} new tokens, prefill excluded, median of "
             f"{d['repeats']}; threads: {d['threads']}. Roofline: batch x read bandwidth ({d['read_bandwidth_gbps']:.1f} "
             "GB/s) / weight bytes (the weights are read once per step).", "",
             "| artifact | weights MB | tok/s b=1 | x fp32 | % roofline | tok/s b=8 | x fp32 | % roofline | "
             "quality vs fp32 (llmforge's gate) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | | | |")
            continue
        cells = []
        for b in ("b1", "b8"):
            if f"noise_{b}" in r:
                cells += ["noise", "-", "-"]
                continue
            cells += [_f(r.get(b), ",.0f"), _f(r.get(f"speedup_{b}"), ".2f") + "x" if f"speedup_{b}" in r else "-",
                      _f(r.get(f"roofline_{b}", 0) * 100, ".0f") + "%" if b in r else "-"]
        quality = "reference" if r["name"] == "PyTorch fp32" else "not measured"
        if r.get("passed") is not None:
            quality = (f"{'pass' if r['passed'] else 'FAIL'}: perplexity {_f(r.get('perplexity_change'), '+.1%')}, "
                       f"top-1 {_f(r.get('top1_agreement'), '.0%')}")
        lines.append(f"| {r['name']} | {r['weight_bytes'] / 1e6:.0f} | " + " | ".join(cells) + f" | {quality} |")
    if any(k.startswith("noise_") for r in d["rows"] for k in r):
        lines += ["", "noise: a rate above 3x the roofline, i.e. timing noise larger than the decode time "
                  "(too few tokens for this load); not reported."]
    return lines


def _serve(s: dict[str, Any]) -> list[str]:
    lines = [f"**Serving** ({_load(s)}):", "",
             f"{s['requests']} OpenAI chat requests of {s['max_tokens']} tokens (temperature 0, eos ignored) at "
             f"{s['clients']} concurrent clients (`llmforge.serve.loadtest`, non-streaming), then "
             f"{s['single_requests']} single requests.", "",
             "| server | tok/s at 16 clients | p50 / p99 ms | single-request p50 ms | reply to 'What is the capital of "
             "France?' |", "|---|---|---|---|---|"]
    for r in s["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:300]} | | | |")
            continue
        c = r["concurrent"]
        errors = f" ({sum(c['errors'].values())} errors)" if c["errors"] else ""
        lines.append(f"| {r['name']} | {c['tokens_per_s']:,.0f}{errors} | {c['e2e_ms']['p50']:,.0f} / "
                     f"{c['e2e_ms']['p99']:,.0f} | {r['single']['e2e_ms']['p50']:,.0f} | "
                     f"{r['reply'].strip()[:60].replace('|', '/')!r} |")
    return lines


def _source(source: dict[str, Any] | None) -> str:
    if not source:
        return ""
    dirty = source["uncommitted_src_files"]
    return f" Source: commit {source['commit']}" + (f" with {len(dirty)} uncommitted files under src/" if dirty else "") + "."


def markdown(result: dict[str, Any]) -> str:
    c = result["cpu"]
    lines = [f"SmolLM2-135M-Instruct (`benchmarks/real_model.py`{' --quick' if result.get('quick') else ''}). "
             f"CPU: {c['model_name']}, {c['cores']} cores, flags {', '.join(c['flags'])}; torch {c['torch']} "
             f"({c['torch_cpu_capability']}).{_source(result.get('source'))}", "", ratios(result)]
    for part, render in (("train", _train), ("decode", _decode), ("serve", _serve)):
        if part in result:
            lines += ["", *render(result[part])]
    return "\n".join(lines) + "\n"
