"""The seed's success targets, checked against what was measured; unmeasured targets say so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    key: str  # where the measured value lives in the summary
    threshold: float
    higher_is_better: bool
    unit: str


TARGETS = (
    Target("perplexity improvement", "perplexity_reduction", 0.15, True, "%"),
    Target("inference speedup", "inference_speedup", 3.0, True, "x"),
    Target("size reduction", "size_reduction", 0.50, True, "%"),
    Target("API p50 latency", "api_p50_latency_ms", 500.0, False, "ms"),
)


def counted_speedup(formats: dict[str, dict[str, Any]]) -> float | None:
    """The best decode speedup among exported formats that passed their checks: a quantized format that failed
    its quality gate (or fp32 parity) is fast because it is wrong, so its speed does not count."""
    speedups = [m["speedup_vs_pytorch"] for m in formats.values()
                if "speedup_vs_pytorch" in m and m.get("passed") is not False]
    return max(speedups) if speedups else None


def _fmt(value: float, unit: str) -> str:
    return f"{value:.1%}" if unit == "%" else f"{value:,.2f}{unit}" if unit == "x" else f"{value:,.0f} {unit}"


def success_check(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row per target: measured value (or 'not measured'), the target, and pass / FAIL / not measured."""
    rows = []
    for t in TARGETS:
        value = summary.get(t.key)
        goal = (">" if t.higher_is_better else "<") + " " + _fmt(t.threshold, t.unit)
        if value is None:
            rows.append({"target": t.name, "measured": "not measured", "goal": goal, "result": "not measured"})
            continue
        ok = value > t.threshold if t.higher_is_better else value < t.threshold
        rows.append({"target": t.name, "measured": _fmt(value, t.unit), "goal": goal,
                     "result": "pass" if ok else "FAIL"})
    return rows
