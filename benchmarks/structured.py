"""Structured output's cost: decode tokens/s with and without a grammar, in the serving engine, same process.

    python benchmarks/structured.py [--model smollm2-135m-instruct] [--batch 1 4] [--tokens 48] [--repeats 3]

For each batch size: the same chat prompts decoded free (greedy, `ignore_eos`, so every row makes exactly
`--tokens` tokens), under a JSON schema (greedy; rows end when the object is complete, so tokens/s counts the
tokens each row made) and under a regex, the three interleaved in each of `--repeats` rounds after a warm-up so
that a change in the machine's load hits all alike. Reports median tokens/s,
the ratio to free decoding, and the time one mask takes (llguidance's fill + apply, per token, measured apart).
Writes benchmarks/results/structured.json and .md. The model is whatever `llmforge serve` would load for
`--model` (a pulled preset, a run dir, 'demo').
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "country", "population", "tags"],
          "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
                         "population": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4}}}
REGEX = r"[A-Z][a-z]+, [A-Z][a-z]+ \(population [0-9]{1,9}\)"
QUESTIONS = ["Describe Paris as JSON.", "Describe Tokyo as JSON.", "Describe Lagos as JSON.", "Describe Lima as JSON."]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from llmforge.serve.backends import LoadOptions, load_backend
    from llmforge.serve.engine import Engine, EngineConfig, GenerationRequest
    from llmforge.serve.guided import compile_grammar
    from llmforge.serve.prompts import chat_ids
    from llmforge.serve.sampling import SamplingParams

    backend = load_backend(args.model, LoadOptions(device="cpu"))
    tok, eos = backend.tokenizer, backend.eos_token_ids
    engine = Engine(backend, EngineConfig(max_batch=max(args.batch))).start()
    grammars = {"free": None, "json_schema": compile_grammar(tok, eos, guided_json=SCHEMA),
                "regex": compile_grammar(tok, eos, guided_regex=REGEX)}
    prompts = [chat_ids(tok, [{"role": "user", "content": q}], args.model) for q in QUESTIONS]

    def run(kind: str, batch: int) -> tuple[float, list[str]]:
        params = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=kind == "free",
                                grammar=grammars[kind])
        reqs = [GenerationRequest(prompts[i % len(prompts)], params) for i in range(batch)]
        start = time.perf_counter()
        done = engine.generate(reqs, timeout=600)
        seconds = time.perf_counter() - start
        return sum(c.completion_tokens for c in done) / seconds, [c.text for c in done]

    rows, samples = [], {}
    for batch in args.batch:
        rates: dict[str, list[float]] = {kind: [] for kind in grammars}
        for kind in grammars:
            run(kind, batch)  # warm-up
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every kind alike
            for kind in grammars:
                rate, texts = run(kind, batch)
                rates[kind].append(rate)
                samples[kind] = texts[0]
        rows += [{"batch": batch, "kind": kind, "tokens_per_s": statistics.median(r), "runs": r}
                 for kind, r in rates.items()]
    engine.close()
    for r in rows:
        free = next(x for x in rows if x["batch"] == r["batch"] and x["kind"] == "free")["tokens_per_s"]
        r["vs_free"] = r["tokens_per_s"] / free

    # One mask, apart from decoding: the grammar's share of a token's time.
    matcher = grammars["json_schema"].matcher()
    scores = torch.randn(len(tok))
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        masked = matcher.mask(scores)
        times.append(time.perf_counter() - t0)
        token = int(masked.argmax())
        if token in eos or matcher.done:
            matcher = grammars["json_schema"].matcher()
        else:
            matcher.advance(token)
    mask_us = 1e6 * statistics.median(times)

    result = {"model": args.model, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
              "tokens": args.tokens, "repeats": args.repeats, "rows": rows, "mask_us_median": mask_us,
              "samples": samples, "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "structured.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"{args.model} on {result['cpu']} ({result['torch_threads']} threads), greedy, up to {args.tokens} "
             f"tokens, median of {args.repeats}; one JSON-schema mask: {mask_us:.0f} µs.", "",
             "| batch | output | tokens/s | vs free |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['kind']} | {r['tokens_per_s']:.1f} | {r['vs_free']:.2f}x |" for r in rows]
    (out / "structured.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("\nsamples:", json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
