"""Prometheus metrics under vLLM's names, so existing vLLM dashboards and alerts work unchanged.

vLLM deprecated `vllm:time_per_output_token_seconds` for `vllm:inter_token_latency_seconds` (vLLM #24110);
the per-request mean is `vllm:request_time_per_output_token_seconds`. Each server has its own registry, so
two apps in one process never share counters.

Every series carries `model_name` (the served name a client asks for) and `variant` (its A/B variant; '' for a
model served alone, which Prometheus reads as no label, so a query written for vLLM matches unchanged). Ours,
beside vLLM's: `llmforge:feedback_score` (scores posted to /v1/feedback), `llmforge:shadow_requests`
{outcome: completed, failed, dropped} and `llmforge:reloads` {outcome: ok, failed}.

HTTP responses are `http_requests_total{method, handler, status}`: the series vLLM's own server exports through
prometheus-fastapi-instrumentator, so its name, labels and `handler="none"` for a path no route matches are that
library's. One difference: `status` is the exact code ("413", "429"), as with the instrumentator's
`should_group_status_codes=False`, because the error panels need to tell a bad key from a full queue; select a class
with `status=~"4.."`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from llmforge.serve.engine import RequestStats

LABELS = ["model_name", "variant"]

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0, 160.0, 640.0)
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


class _EngineGauges:
    """Running and waiting requests, read from the engines at scrape time rather than tracked twice."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, str, Any]]]) -> None:
        self.engines = engines

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests decoding now.", labels=LABELS)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting for a slot.", labels=LABELS)
        counts: dict[tuple[str, str], list[int]] = {}  # a reload's old and new engine count as one series
        for name, variant, engine in self.engines():
            c = counts.setdefault((name, variant), [0, 0])
            c[0] += engine.num_running
            c[1] += engine.num_waiting
        for labels, (r, w) in counts.items():
            running.add_metric(list(labels), r)
            waiting.add_metric(list(labels), w)
        yield running
        yield waiting


class ServeMetrics:
    def __init__(self, engines: Callable[[], Iterable[tuple[str, str, Any]]]) -> None:
        """`engines`: (served name, variant, engine) of every engine holding requests, read at scrape time."""
        self.registry = CollectorRegistry()
        labels, r = LABELS, self.registry
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Time between consecutive output tokens.", labels,
                             buckets=TOKEN_BUCKETS, registry=r)
        self.tpot = Histogram("vllm:request_time_per_output_token_seconds", "Mean time per output token of a request.",
                              labels, buckets=TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", labels,
                             buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("vllm:request_queue_time_seconds", "Time spent waiting for a slot.", labels,
                               buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", labels, registry=r)
        self.success = Counter("vllm:request_success", "Finished requests by finish reason.",
                               [*labels, "finished_reason"], registry=r)
        self.feedback = Histogram("llmforge:feedback_score", "Scores posted to /v1/feedback (0 worst, 1 best).",
                                  labels, buckets=(0.0, 0.25, 0.5, 0.75, 1.0), registry=r)
        self.shadow = Counter("llmforge:shadow_requests", "Requests copied to a shadow model, by outcome "
                              "(completed, failed, dropped: its queue was full).", ["model_name", "outcome"],
                              registry=r)
        self.reloads = Counter("llmforge:reloads", "Model reloads, by outcome (ok, failed).", ["outcome"], registry=r)
        self.http = Counter("http_requests", "HTTP responses by method, route template and status code.",
                            ["method", "handler", "status"], registry=r)
        r.register(_EngineGauges(engines))  # type: ignore[arg-type]

    def observe(self, model: str, s: RequestStats, variant: str = "") -> None:
        """One finished request (called from the engine's worker thread; prometheus_client is thread-safe)."""
        at = (model, variant)
        if s.scheduled is not None:
            self.queue.labels(*at).observe(s.scheduled - s.arrival)
            self.prompt_tokens.labels(*at).inc(s.prompt_tokens)
        if s.first_token is not None:
            self.ttft.labels(*at).observe(s.first_token - s.arrival)
        for a, b in zip(s.token_times, s.token_times[1:]):
            self.itl.labels(*at).observe(b - a)
        if len(s.token_times) > 1:
            self.tpot.labels(*at).observe((s.token_times[-1] - s.token_times[0]) / (len(s.token_times) - 1))
        self.generation_tokens.labels(*at).inc(s.completion_tokens)
        if s.finished is not None:
            self.e2e.labels(*at).observe(s.finished - s.arrival)
        self.success.labels(*at, s.finish_reason or "unknown").inc()

    def response(self, method: str, handler: str, status: int) -> None:
        """One HTTP response, counted as it starts (the middleware calls this for every request)."""
        self.http.labels(method, handler, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
