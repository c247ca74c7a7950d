"""Serving under load: `llmforge serve` against a seed-style server, same model, same load tool, one run.

    python benchmarks/serve.py [MODEL]            # default: the demo fine-tuned model (runs/demo/train), else 'demo'

Baseline (the seed's `/chat`): a FastAPI app whose handler makes one transformers `pipeline("text-generation")`
call per request (sync handler, so FastAPI's threadpool runs requests side by side), torch's default threads.
llmforge: `llmforge serve MODEL` with its defaults (continuous batching, KV cache). Both are driven by
`llmforge.serve.loadtest` with 32-token replies (eos ignored, so every reply is 32 tokens) after a warm-up:
16 concurrent clients x 64 requests (non-streaming for both, and streaming for llmforge to get time to first
token), then one client x 20 requests for single-request latency. Writes benchmarks/results/serve.json and .md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKENS, CLIENTS, REQUESTS, SINGLE = 32, 16, 64, 20


def seed_server(port: int, model: str) -> None:
    """The baseline server process."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    from llmforge.models.reference import resolve_model

    pipe = pipeline("text-generation", model=resolve_model(model).path, device="cpu")
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "demo", "object": "model", "created": 0, "owned_by": "seed"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        n = body["max_tokens"]
        out = pipe(body["messages"], max_new_tokens=n, min_new_tokens=n, do_sample=False)
        text = out[0]["generated_text"][-1]["content"]
        return {"id": "seed", "object": "chat.completion", "created": 0, "model": "demo",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _wait(url: str, path: str, proc: subprocess.Popen[bytes], key: str | None = None) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"the server behind {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"{url} was not ready in 5 minutes")


def _ms(d: dict[str, float] | None) -> dict[str, float] | None:
    return None if d is None else {k: v * 1e3 for k, v in d.items()}


def _short(r: dict[str, Any]) -> dict[str, Any]:
    return {"completed": r["completed"], "errors": r["errors"], "requests_per_s": r["requests_per_s"],
            "tokens_per_s": r["output_tokens_per_s"], "ttft_ms": _ms(r["ttft_s"]), "tpot_ms": _ms(r["tpot_s"]),
            "e2e_ms": _ms(r["e2e_s"])}


def measure(url: str, stream_too: bool, key: str | None, requests: int = REQUESTS, single: int = SINGLE,
            clients: int = CLIENTS) -> dict[str, Any]:
    from llmforge.serve.loadtest import loadtest

    loadtest(url, requests=8, concurrency=4, max_tokens=TOKENS, stream=False, api_key=key)  # warm-up
    out = {"concurrent": _short(loadtest(url, requests=requests, concurrency=clients, max_tokens=TOKENS,
                                         stream=False, api_key=key)),
           "single": _short(loadtest(url, requests=single, concurrency=1, max_tokens=TOKENS, stream=False,
                                     api_key=key))}
    if stream_too:
        out["concurrent_streaming"] = _short(loadtest(url, requests=requests, concurrency=clients, max_tokens=TOKENS,
                                                      stream=True, api_key=key))
    return out


@contextmanager
def started(cmd: list[str], port: int, ready: str, key: str | None, log: Path | None = None) -> Iterator[str]:
    """A server process, ready (GET `ready` answers 200); yields its URL and terminates it on exit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if key:
        env["LLMFORGE_API_KEY"] = key
    out = log.open("w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, ready, proc, key)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if log:
            out.close()


def run(name: str, cmd: list[str], port: int, ready: str, key: str | None) -> dict[str, Any]:
    with started(cmd, port, ready, key) as url:
        print(f"== {name}", flush=True)
        return measure(url, name == "llmforge", key)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--seed-server":
        seed_server(int(sys.argv[2]), sys.argv[3])
        return
    default = ROOT / "runs" / "demo" / "train"
    model = sys.argv[1] if len(sys.argv) > 1 else (str(default) if (default / "manifest.json").is_file() else "demo")
    from llmforge.serve.check import free_port

    key = os.urandom(8).hex()
    p1, p2 = free_port(), free_port()
    seed = run("seed", [sys.executable, __file__, "--seed-server", str(p1), model], p1, "/v1/models", None)
    ours = run("llmforge", [sys.executable, "-m", "llmforge.cli", "serve", model, "--port", str(p2),
                            "--served-model-name", "demo"], p2, "/ready", key)
    result = {"model": model, "tokens": TOKENS, "clients": CLIENTS, "requests": REQUESTS, "seed": seed,
              "llmforge": ours,
              "throughput_ratio": ours["concurrent"]["tokens_per_s"] / seed["concurrent"]["tokens_per_s"]}
    out = ROOT / "benchmarks" / "results"
    (out / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "serve.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = ["| server | tokens/s (16 clients) | p50 / p99 ms (16 clients) | single request p50 ms | TTFT p50 ms |",
             "|---|---|---|---|---|"]
    for name, key in (("seed-style (pipeline() per request)", "seed"), ("llmforge serve", "llmforge")):
        c, s = r[key]["concurrent"], r[key]["single"]
        ttft = r[key].get("concurrent_streaming", {}).get("ttft_ms")
        lines.append(f"| {name} | {c['tokens_per_s']:,.0f} | {c['e2e_ms']['p50']:,.0f} / {c['e2e_ms']['p99']:,.0f} | "
                     f"{s['e2e_ms']['p50']:,.0f} | {'-' if not ttft else format(ttft['p50'], ',.0f')} |")
    return "\n".join(lines) + (f"\n\n{r['requests']} requests of {r['tokens']} tokens at {r['clients']} concurrent "
                               f"clients (non-streaming), then 20 single requests; throughput ratio "
                               f"{r['throughput_ratio']:.1f}x.\n")


if __name__ == "__main__":
    main()
