from __future__ import annotations

from llmforge.eval.success import counted_speedup, success_check


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


def test_a_format_that_failed_its_checks_does_not_count_for_speedup() -> None:
    formats = {"onnx-int8": {"speedup_vs_pytorch": 4.0, "passed": False},  # fast because it is wrong
               "gguf-q8_0": {"speedup_vs_pytorch": 2.5, "passed": True},
               "gguf-q4_0": {"speedup_vs_pytorch": 3.0, "passed": None},  # not measured: not known to be wrong
               "onnx": {"passed": True}}
    assert counted_speedup(formats) == 3.0
    assert counted_speedup({"onnx-int8": {"speedup_vs_pytorch": 4.0, "passed": False}}) is None
