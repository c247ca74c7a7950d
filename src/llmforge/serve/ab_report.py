"""`llmforge ab report`: compare the variants of each A/B-served name from the server's event log (events.jsonl).

Each variant is compared with the baseline (`baseline`, else the variant that served the most requests) on
  latency      Mann-Whitney U on the latencies of answered requests (skewed, so ranks rather than means)
  errors       the share of requests answered 5xx: chi-square on the 2x2 table, Fisher's exact test when an
               expected count is under 5
  feedback     Welch's t on the scores posted to /v1/feedback (the mean score is what a rollout decides on)
Two-sided, at `alpha` divided by the number of comparisons per metric (Bonferroni). A difference is reported
as a winner only when it is significant; otherwise: no significant difference. Pure: records in, report out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from llmforge.errors import LlmforgeError, require

MIN_SAMPLES = 2


@dataclass
class VariantStats:
    model: str
    variant: str
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return xs[min(int(q * len(xs)), len(xs) - 1)]

    @property
    def mean_score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "requests": self.requests, "errors": self.errors,
                "error_rate": self.error_rate, "latency_p50_s": self.quantile(0.5),
                "latency_p95_s": self.quantile(0.95), "feedback": len(self.scores), "mean_score": self.mean_score}


@dataclass
class Comparison:
    model: str
    metric: str  # latency | errors | feedback
    baseline: str
    variant: str
    test: str
    p_value: float | None  # None: too few samples to test
    alpha: float
    winner: str | None  # the better variant, when the difference is significant

    @property
    def significant(self) -> bool:
        return self.winner is not None

    def sentence(self) -> str:
        head = f"{self.metric}, {self.variant} vs {self.baseline}: "
        if self.p_value is None:
            return head + f"too few samples to test (need {MIN_SAMPLES} on each side)"
        p = f"{self.test}, p={self.p_value:.3g}, alpha={self.alpha:.3g}"
        if self.winner is None:
            return head + f"no significant difference ({p})"
        return head + f"{self.winner} is better ({p})"


@dataclass
class ABReport:
    variants: list[VariantStats]
    comparisons: list[Comparison]

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [v.summary() for v in self.variants],
                "comparisons": [asdict(c) | {"result": c.sentence()} for c in self.comparisons]}

    def markdown(self) -> str:
        lines = ["| model | variant | requests | error rate | p50 latency s | p95 latency s | feedback | mean score |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for v in self.variants:
            lines.append(f"| {v.model} | {v.variant} | {v.requests} | {v.error_rate:.2%} | {_num(v.quantile(0.5))} "
                         f"| {_num(v.quantile(0.95))} | {len(v.scores)} | {_num(v.mean_score)} |")
        lines += ["", *[f"- {c.model}: {c.sentence()}" for c in self.comparisons]]
        return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def collect(records: list[dict[str, Any]], model: str | None = None) -> dict[str, dict[str, VariantStats]]:
    """served name -> variant -> its requests and feedback; only names served by two or more variants."""
    out: dict[str, dict[str, VariantStats]] = {}
    for r in records:
        name, variant = r.get("model"), r.get("variant")
        if not name or not variant or (model is not None and name != model):
            continue
        v = out.setdefault(name, {}).setdefault(variant, VariantStats(name, variant))
        if r["event"] == "request":
            v.requests += 1
            if r["status"] >= 500:
                v.errors += 1
            elif r["status"] < 400:
                v.latencies.append(float(r["latency_s"]))
        elif r["event"] == "feedback":
            v.scores.append(float(r["score"]))
    return {name: vs for name, vs in out.items() if len(vs) >= 2}


def ab_report(records: list[dict[str, Any]], alpha: float = 0.05, baseline: str | None = None,
              model: str | None = None) -> ABReport:
    groups = collect(records, model)
    if not groups:
        raise LlmforgeError("the event log holds no A/B-served name with two or more variants"
                            + (f" named '{model}'" if model else "")
                            + "; serve with `ab` settings (or --ab) and `event_log` set")
    variants, comparisons = [], []
    for name, vs in groups.items():
        if baseline is not None and baseline not in vs:
            raise LlmforgeError(f"baseline '{baseline}' is not a variant of '{name}'; variants: {', '.join(vs)}")
        base = vs[baseline] if baseline else max(vs.values(), key=lambda v: v.requests)
        others = [v for v in vs.values() if v is not base]
        a = alpha / len(others)
        variants += [base, *others]
        for v in others:
            comparisons += [_latency(base, v, a), _errors(base, v, a), _feedback(base, v, a)]
    return ABReport(variants, comparisons)


def _stats() -> Any:
    return require("scipy.stats", "serve")


def _latency(base: VariantStats, v: VariantStats, alpha: float) -> Comparison:
    mannwhitneyu = _stats().mannwhitneyu

    p = None
    if min(len(base.latencies), len(v.latencies)) >= MIN_SAMPLES:
        p = float(mannwhitneyu(v.latencies, base.latencies, alternative="two-sided").pvalue)
    better = v if (v.quantile(0.5) or 0) < (base.quantile(0.5) or 0) else base
    return _compare("latency", "Mann-Whitney U", base, v, p, alpha, better)


def _errors(base: VariantStats, v: VariantStats, alpha: float) -> Comparison:
    chi2_contingency, fisher_exact = _stats().chi2_contingency, _stats().fisher_exact

    p = None
    if min(base.requests, v.requests) >= MIN_SAMPLES:
        table = [[base.errors, base.requests - base.errors], [v.errors, v.requests - v.errors]]
        if base.errors + v.errors == 0:
            p, test = 1.0, "chi-square"
        else:
            chi2, p_chi, _, expected = chi2_contingency(table)
            test = "chi-square"
            p = float(p_chi)
            if expected.min() < 5:
                p, test = float(fisher_exact(table).pvalue), "Fisher's exact"
        return _compare("errors", test, base, v, p, alpha, v if v.error_rate < base.error_rate else base)
    return _compare("errors", "chi-square", base, v, p, alpha, base)


def _feedback(base: VariantStats, v: VariantStats, alpha: float) -> Comparison:
    ttest_ind = _stats().ttest_ind

    p = None
    if min(len(base.scores), len(v.scores)) >= MIN_SAMPLES:
        p = float(ttest_ind(v.scores, base.scores, equal_var=False).pvalue)
        p = 1.0 if math.isnan(p) else p  # every score the same on both sides: nothing to tell apart
    better = v if (v.mean_score or 0) > (base.mean_score or 0) else base
    return _compare("feedback", "Welch's t", base, v, p, alpha, better)


def _compare(metric: str, test: str, base: VariantStats, v: VariantStats, p: float | None, alpha: float,
             better: VariantStats) -> Comparison:
    winner = better.variant if p is not None and p < alpha else None
    return Comparison(base.model, metric, base.variant, v.variant, test, p, alpha, winner)
