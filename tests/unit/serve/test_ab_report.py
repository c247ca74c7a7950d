"""`llmforge ab report` on constructed event logs: a large difference names its winner, none reads as none."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from llmforge.errors import LlmforgeError
from llmforge.serve.ab_report import ab_report
from llmforge.serve.events import read_events


def events(name: str, variant: str, n: int, latency: float, error_rate: float, scores: list[float],
           rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    errors = round(n * error_rate)
    for i in range(n):
        status = 500 if i < errors else 200
        out.append({"event": "request", "request_id": f"{variant}-{i}", "model": name, "variant": variant,
                    "status": status, "latency_s": rng.lognormvariate(0, 0.3) * latency})
    out += [{"event": "feedback", "request_id": f"{variant}-{i}", "model": name, "variant": variant, "score": s}
            for i, s in enumerate(scores)]
    return out


def verdicts(report: Any) -> dict[str, str | None]:
    return {c.metric: c.winner for c in report.comparisons}


def test_a_large_difference_names_the_better_variant_on_each_metric() -> None:
    rng = random.Random(0)
    log = (events("chat", "v1", 400, 0.30, 0.02, [rng.choice([0, 1, 1]) for _ in range(120)], rng)  # control
           + events("chat", "v2", 100, 0.15, 0.15, [rng.choice([0, 0, 1]) for _ in range(80)], rng))
    report = ab_report(log)
    assert [v.variant for v in report.variants] == ["v1", "v2"]  # the busiest is the baseline
    assert verdicts(report) == {"latency": "v2", "errors": "v1", "feedback": "v1"}
    latency = next(c for c in report.comparisons if c.metric == "latency")
    assert latency.p_value is not None and latency.p_value < 1e-6 and latency.test == "Mann-Whitney U"
    assert "v2 is better" in latency.sentence()
    v2 = report.variants[1]
    assert (v2.requests, v2.errors, len(v2.latencies), len(v2.scores)) == (100, 15, 85, 80)


def test_no_difference_reads_as_no_significant_difference() -> None:
    rng = random.Random(1)
    scores = [rng.random() for _ in range(200)]
    log = (events("chat", "v1", 300, 0.2, 0.05, scores[:100], rng)
           + events("chat", "v2", 300, 0.2, 0.05, scores[100:], rng))
    report = ab_report(log)
    assert verdicts(report) == {"latency": None, "errors": None, "feedback": None}
    assert all("no significant difference" in c.sentence() for c in report.comparisons)
    assert "| chat | v1 | 300 | 5.00% |" in report.markdown()


def test_three_variants_are_each_compared_with_the_baseline_at_a_bonferroni_level() -> None:
    rng = random.Random(2)
    log = [*events("chat", "a", 200, 0.2, 0.0, [], rng), *events("chat", "b", 200, 0.1, 0.0, [], rng),
           *events("chat", "c", 200, 0.2, 0.0, [], rng), *events("solo", "", 50, 0.2, 0.0, [], rng)]
    report = ab_report(log, baseline="a", alpha=0.05)
    pairs = {(c.variant, c.metric): c for c in report.comparisons}
    assert set(pairs) == {(v, m) for v in "bc" for m in ("latency", "errors", "feedback")}
    assert pairs["b", "latency"].winner == "b" and pairs["c", "latency"].winner is None
    assert pairs["b", "latency"].alpha == pytest.approx(0.025)
    assert pairs["b", "feedback"].p_value is None and "too few samples" in pairs["b", "feedback"].sentence()
    with pytest.raises(LlmforgeError, match="baseline 'z' is not a variant of 'chat'"):
        ab_report(log, baseline="z")
    with pytest.raises(LlmforgeError, match="no A/B-served name"):
        ab_report(events("solo", "", 10, 0.2, 0.0, [], rng))


def test_the_cli_reads_the_servers_event_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmforge.cli import app

    rng = random.Random(3)
    log = events("chat", "v1", 200, 0.3, 0.0, [], rng) + events("chat", "v2", 200, 0.1, 0.0, [], rng)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    result = CliRunner().invoke(app, ["ab", "report", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    latency = next(c for c in out["comparisons"] if c["metric"] == "latency")
    assert latency["winner"] == "v2" and [v["variant"] for v in out["variants"]] == ["v1", "v2"]
    (tmp_path / "bad.jsonl").write_text('{"event": "request"}\nnot json\n')
    with pytest.raises(LlmforgeError, match="bad.jsonl, line 2: not JSON"):
        read_events(tmp_path / "bad.jsonl")
