"""The Grafana dashboard asks for metrics the server really exports: the real app over the unit tier's fake
backend, one chat request so the histograms have samples, /metrics scraped and parsed, and every metric name and
label in every PromQL expression of the dashboard looked up in it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from llmforge.serve.app import create_app
from llmforge.serve.settings import ServeSettings
from tests.unit.serve.conftest import FakeBackend

DASHBOARDS = sorted((Path(__file__).resolve().parents[3] / "deploy/grafana/dashboards").glob("*.json"))
KEY = "dash-key"
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) of a PromQL expression with Grafana's $variables."""
    labels: set[str] = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\$\{?\w+\}?", "0", expr)  # $__rate_interval, $model
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(rf"({_NAME})\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # selectors' matchers, range durations
    metrics = set()
    for m in re.finditer(rf"(?<![\w:.])({_NAME})(\s*\()?", expr):
        if not m.group(2) and m.group(1) not in {"and", "or", "unless", "bool", "offset"}:
            metrics.add(m.group(1))  # a name followed by '(' is a function
    return metrics, labels


def dashboard_queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        if m:  # label_values(SERIES, LABEL): a series selector and a label it must have
            exprs.append(f"sum by ({m.group(2)}) ({m.group(1)})")
    return exprs


def test_promql_names_reads_metrics_and_labels() -> None:
    metrics, labels = promql_names(
        'histogram_quantile(0.95, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{model_name=~"$model"}'
        '[$__rate_interval]))) / clamp_min(sum(vllm:num_requests_running offset 5m), 1e-9)')
    assert metrics == {"vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_running"}
    assert labels == {"le", "model_name"}


@pytest.fixture()
def scraped(tiny_model_dir: Path) -> Iterator[dict[str, set[str]]]:
    """Sample name -> the label names it carries, from a live /metrics after one chat request."""
    from prometheus_client.parser import text_string_to_metric_families
    from transformers import AutoTokenizer

    backend = FakeBackend(AutoTokenizer.from_pretrained(str(tiny_model_dir)), max_model_len=256)
    settings = ServeSettings(models={"fake": "fake"}, api_keys=[KEY], device="cpu", warmup=False)
    threads = torch.get_num_threads()
    with TestClient(create_app(settings, loader=lambda *_: backend),
                    headers={"Authorization": f"Bearer {KEY}"}) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.01)
        reply = client.post("/v1/chat/completions", json={"model": "fake", "max_tokens": 4,
                                                          "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        text = client.get("/metrics").text
    torch.set_num_threads(threads)
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    yield samples


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_uses_exported_metrics(path: Path, scraped: dict[str, set[str]]) -> None:
    dashboard = json.loads(path.read_text())
    exprs = dashboard_queries(dashboard)
    assert len(exprs) >= len(dashboard["panels"])
    used: set[str] = set()
    for expr in exprs:
        metrics, labels = promql_names(expr)
        assert metrics, expr
        for name in metrics:
            # Exact sample names: a histogram is only queryable as _bucket/_sum/_count, a counter as _total.
            assert name in scraped, f"{path.name}: {name} is not in /metrics ({expr})"
        carried = set().union(*(scraped[n] for n in metrics))
        assert labels <= carried, f"{path.name}: labels {labels - carried} not on {metrics} ({expr})"
        used |= metrics
    # The panels the deployment needs: traffic, failures, TTFT and e2e percentiles, load, tokens/s, HTTP errors.
    assert {"vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_running", "vllm:num_requests_waiting",
            "vllm:generation_tokens_total", "http_requests_total"} <= used
