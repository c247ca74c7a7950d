"""`loadtest(url, ...)`: a fixed number of chat requests at a fixed concurrency, timed the way vLLM's benchmark
times them (TGI's method: send them all, time them all).

Reports time to first token (TTFT), time per output token after the first (TPOT), inter-token latency (ITL)
and end-to-end latency, each as p50/p95/p99 and mean, request and output-token throughput, and errors by
HTTP status. By default it asks for exactly `max_tokens` tokens (vLLM's `ignore_eos`), so runs compare.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

DEFAULT_PROMPT = "Write a short Python function that adds two numbers."


@dataclass
class Sample:
    status: str  # "200", "429", ..., "timeout", "connection_error", "stream_error"
    e2e: float = 0.0
    ttft: float | None = None
    tokens: int = 0
    token_times: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "200"


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(values, [50, 95, 99])  # linear interpolation between order statistics
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": sum(values) / len(values)}


async def _stream(client: httpx.AsyncClient, body: dict[str, Any], start: float) -> Sample:
    sample = Sample("200")
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return Sample(str(response.status_code), time.perf_counter() - start)
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if "error" in data:
                sample.status = "stream_error"
                continue
            now = time.perf_counter()
            if any(c.get("delta", {}).get("content") for c in data.get("choices", [])):
                sample.ttft = sample.ttft if sample.ttft is not None else now - start
                sample.token_times.append(now)
            if data.get("usage"):
                sample.tokens = data["usage"]["completion_tokens"]
    sample.e2e = time.perf_counter() - start
    return sample


async def _once(client: httpx.AsyncClient, body: dict[str, Any]) -> Sample:
    start = time.perf_counter()
    try:
        if body["stream"]:
            return await _stream(client, body, start)
        response = await client.post("/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            return Sample(str(response.status_code), elapsed)
        return Sample("200", elapsed, tokens=response.json()["usage"]["completion_tokens"])
    except httpx.TimeoutException:
        return Sample("timeout", time.perf_counter() - start)
    except httpx.TransportError:
        return Sample("connection_error", time.perf_counter() - start)


async def _model(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def _report(samples: list[Sample], duration: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.status] = errors.get(s.status, 0) + 1
    tokens = sum(s.tokens for s in ok)
    tpot = [(s.e2e - s.ttft) / (s.tokens - 1) for s in ok if s.ttft is not None and s.tokens > 1]
    itl = [b - a for s in ok for a, b in zip(s.token_times, s.token_times[1:])]
    return {
        "completed": len(ok), "errors": errors, "duration_s": duration,
        "requests_per_s": len(ok) / duration if duration else 0.0,
        "output_tokens": tokens, "output_tokens_per_s": tokens / duration if duration else 0.0,
        "ttft_s": _summary([s.ttft for s in ok if s.ttft is not None]), "tpot_s": _summary(tpot),
        "itl_s": _summary(itl), "e2e_s": _summary([s.e2e for s in ok]),
    }


async def _run(url: str, requests: int, concurrency: int, prompt: str, max_tokens: int, api_key: str | None,
               stream: bool, model: str | None, timeout_s: float, ignore_eos: bool) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits) as client:
        model = model or await _model(client)
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": max_tokens, "temperature": 0.0, "stream": stream,
                                "ignore_eos": ignore_eos}
        if stream:
            body["stream_options"] = {"include_usage": True}
        todo = iter(range(requests))
        samples: list[Sample] = []

        async def client_loop() -> None:
            for _ in todo:  # each simulated client takes the next request until none is left
                samples.append(await _once(client, body))

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(min(concurrency, requests))))
        duration = time.perf_counter() - start
    return {"url": url, "model": model, "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens,
            "stream": stream, **_report(samples, duration)}


def loadtest(url: str, requests: int = 64, concurrency: int = 16, prompt: str = DEFAULT_PROMPT, max_tokens: int = 32,
             api_key: str | None = None, stream: bool = True, model: str | None = None, timeout_s: float = 300.0,
             ignore_eos: bool = True) -> dict[str, Any]:
    """Send `requests` chat completions to the server at `url`, `concurrency` at a time; return the report.

    `model` defaults to the first one the server lists. Latencies are in seconds.
    """
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    return asyncio.run(_run(url, requests, concurrency, prompt, max_tokens, api_key, stream, model, timeout_s,
                            ignore_eos))
