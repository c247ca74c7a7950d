"""Measure one loaded model: time to first token, prefill and decode speed, request latency, bandwidth.

Warm-up runs first, then `repeats` timed runs; medians are reported with the spread (min, max). Decode speed at
batch b is b * (new_tokens - 1) / (time of a full request - time to first token), so prefill is not counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from llmforge.bench.config import BenchOptions


def _timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def machine_read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-N read bandwidth of a large fp32 sum, in bytes/s: the roofline for batch-1 decoding."""
    x = torch.ones(megabytes * (1 << 20) // 4)
    times = _timed(lambda: float(x.sum()), repeats, 1)
    return x.numel() * 4 / min(times)


@torch.no_grad()
def measure(model: Any, vocab_size: int, opts: BenchOptions, seed: int = 0) -> dict[str, Any]:
    """Measure a torch model or any runtime (`llmforge.models.runtimes`) the same way.

    A runtime that decodes fewer rows at once (`max_batch`, llama.cpp here: 1) is measured at the batch sizes it
    holds; the others are listed under `skipped_batch_sizes`."""
    from llmforge.models.runtimes import as_runtime

    runtime = as_runtime(model)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(8, vocab_size, (1, opts.prompt_tokens), generator=g)  # (1, P)
    n = opts.new_tokens

    def generate(batch: torch.Tensor, tokens: int) -> None:  # eos ignored: always `tokens` new tokens
        runtime.generate(batch.tolist(), tokens)

    prefill = _timed(lambda: runtime.forward(prompt, torch.ones_like(prompt)), opts.repeats, opts.warmup)
    ttft = _timed(lambda: generate(prompt, 1), opts.repeats, opts.warmup)
    request = _timed(lambda: generate(prompt, n), opts.repeats, opts.warmup)
    result: dict[str, Any] = {
        "runtime": runtime.name,
        "prompt_tokens": opts.prompt_tokens,
        "new_tokens": n,
        "ttft_ms": {k: v * 1e3 for k, v in _spread(ttft).items()},
        "prefill_tokens_per_second": opts.prompt_tokens / statistics.median(prefill),
        "latency_ms": {"p50": float(np.percentile(request, 50)) * 1e3, "p95": float(np.percentile(request, 95)) * 1e3,
                       "min": min(request) * 1e3, "max": max(request) * 1e3},
        "decode_tokens_per_second": {},
    }
    sizes = [b for b in opts.batch_sizes if runtime.max_batch is None or b <= runtime.max_batch]
    if len(sizes) < len(opts.batch_sizes):
        result["skipped_batch_sizes"] = [b for b in opts.batch_sizes if b not in sizes]
    for b in sizes:
        batch = prompt.expand(b, -1).contiguous()  # (b, P)
        first = statistics.median(_timed(lambda: generate(batch, 1), opts.repeats, opts.warmup))
        full = _timed(lambda: generate(batch, n), opts.repeats, opts.warmup)
        result["decode_tokens_per_second"][str(b)] = b * (n - 1) / max(statistics.median(full) - first, 1e-9)
    return result
