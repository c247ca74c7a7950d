from __future__ import annotations

from llmforge.eval.success import success_check


def test_measured_targets_pass_or_fail_and_missing_ones_say_so() -> None:
    rows = {r["target"]: r for r in success_check({"perplexity_reduction": 0.2, "api_p50_latency_ms": 650.0})}
    assert rows["perplexity improvement"]["result"] == "pass"
    assert rows["perplexity improvement"]["measured"] == "20.0%"
    assert rows["API p50 latency"]["result"] == "FAIL"
    assert rows["inference speedup"]["result"] == "not measured"
    assert rows["size reduction"]["measured"] == "not measured"


def test_threshold_is_strict() -> None:
    rows = {r["target"]: r for r in success_check({"perplexity_reduction": 0.15})}
    assert rows["perplexity improvement"]["result"] == "FAIL"
