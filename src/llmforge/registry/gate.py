"""The `retrain:` section of a pipeline YAML and its promotion gate. Pure: no registry, no model.

`llmforge retrain` fine-tunes a candidate on old plus new data, scores it and the production model on the same
held-out set, registers it, and promotes it only when every line of the gate passes. Each line is checked on its
own and recorded with the numbers it saw, so a refusal names the line that failed:

    retrain:
      registry: demo                        # the registered model; its production alias is the one compared with
      from: production                      # or base: what production was fine-tuned from
      old_data_fraction: 0.5                # share of the old training records kept beside the new ones
      gate:
        min_perplexity_improvement_pct: 1   # candidate perplexity at least 1% below production's
        max_metric_drop: {rougeL: 0.02}     # answer metrics may fall at most this much
        export_fidelity: false              # true: the export stage's parity / quality gate must pass too
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from llmforge.config import Section

# Lower is better for these: perplexity has its own line; the others are not quality scores to hold up.
NOT_DROP_METRICS = ("perplexity", "loss", "nll_sum", "tokens", "samples", "repetition_rate", "mean_generated_tokens")
ANSWER_METRICS = ("rouge1", "rouge2", "rougeL", "bertscore_f1", "coherence", "exact_match", "syntax_valid",
                  "embedding_similarity")


class PromotionGate(Section):
    """What a retrained candidate must reach against production, on the same held-out set, to be promoted."""

    min_perplexity_improvement_pct: float = Field(
        0.0, description="The candidate's held-out perplexity must be at least this many percent below "
        "production's: 1 = 1% lower; 0 = no worse; a negative value allows that much worse.")
    max_metric_drop: dict[str, float] = Field(
        default_factory=dict, description="Metric -> the largest allowed drop (production minus candidate) on the "
        "held-out set, for scores where higher is better: rougeL, rouge1, rouge2, exact_match, syntax_valid, "
        "embedding_similarity (these need eval.generate_samples > 0), or an lm-eval score as harness.TASK.METRIC.")
    export_fidelity: bool = Field(
        False, description="Also export the candidate in export.formats (default: onnx) and require every format to "
        "pass the export stage's own parity / quality gate (export.gate). Off by default: it exports the model.")

    @field_validator("max_metric_drop")
    @classmethod
    def _higher_is_better(cls, v: dict[str, float]) -> dict[str, float]:
        for metric, drop in v.items():
            if metric.split(".")[-1] in NOT_DROP_METRICS:
                raise ValueError(f"'{metric}' is not a score where higher is better; perplexity has its own line "
                                 "(min_perplexity_improvement_pct)")
            if drop < 0:
                raise ValueError(f"the allowed drop of '{metric}' is {drop}; it must be 0 or more")
        return v

    def check(self, candidate: dict[str, Any], production: dict[str, Any],
              export_formats: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Each gate line with the numbers it compared and whether it passed. `candidate` and `production`: the
        two eval runs' metrics.json; `export_formats`: the candidate's export run's `formats` (export_fidelity)."""
        lines = [self._perplexity(candidate, production)]
        lines += [self._drop(metric, limit, candidate, production) for metric, limit in self.max_metric_drop.items()]
        if self.export_fidelity:
            lines.append(_export_line(export_formats))
        return lines

    def _perplexity(self, candidate: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
        cand, prod = float(candidate["perplexity"]), float(production["perplexity"])
        improvement = (prod - cand) / prod * 100
        passed = improvement >= self.min_perplexity_improvement_pct
        detail = (f"perplexity {prod:.4g} -> {cand:.4g}: {improvement:+.2f}% improvement "
                  f"{'>=' if passed else '<'} {self.min_perplexity_improvement_pct:g}% required")
        return {"line": "min_perplexity_improvement_pct", "passed": passed,
                "required": self.min_perplexity_improvement_pct, "measured": improvement, "candidate": cand, "production": prod, "detail": detail}

    @staticmethod
    def _drop(metric: str, limit: float, candidate: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
        line = f"max_metric_drop.{metric}"
        cand, prod = lookup(candidate, metric), lookup(production, metric)
        if cand is None or prod is None:
            known = ", ".join(sorted(numeric_keys(candidate))) or "none"
            return {"line": line, "passed": False, "required": limit, "measured": None, "candidate": cand,
                    "production": prod, "detail": f"{metric} was not measured (the eval's metrics: {known})"}
        drop = prod - cand
        passed = drop <= limit + 1e-12  # a drop equal to the limit passes
        return {"line": line, "passed": passed, "required": limit, "measured": drop, "candidate": cand,
                "production": prod, "detail": f"{metric} {prod:.4g} -> {cand:.4g}: drop {drop:+.4g} "
                f"{'<=' if passed else '>'} {limit:g} allowed"}


def _export_line(formats: dict[str, Any] | None) -> dict[str, Any]:
    failed = {}
    for fmt, m in (formats or {}).items():
        if m.get("passed") is True:
            continue
        why = "; ".join(m.get("gate_failures") or []) or (
            "not measured: " + str(m.get("llama_cpp")) if m.get("passed") is None else "parity failed")
        failed[fmt] = why
    passed = bool(formats) and not failed
    detail = ("every format passed its parity / quality gate: " + ", ".join(formats or {}) if passed else
              "; ".join(f"{fmt}: {why}" for fmt, why in failed.items()) or "no format was exported")
    return {"line": "export_fidelity", "passed": passed, "required": True, "measured": sorted(failed) or None,
            "detail": detail}


def lookup(metrics: dict[str, Any], dotted: str) -> float | None:
    """A number in a metrics dict by its dotted key ('rougeL', 'harness.arc_easy.acc'); None when absent."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def numeric_keys(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            out += numeric_keys(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(prefix + key)
    return out


class RetrainOptions(Section):
    """`llmforge retrain CONFIG --data NEW`: fine-tune on old plus new data; promote only past the gate."""

    model_config = ConfigDict(**Section.model_config, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    registry: str | None = Field(
        None, description="Registered model to retrain; its production alias is the model the candidate is "
        "compared with, and the candidate is registered as its next version.")
    from_: Literal["production", "base"] = Field(
        "production", alias="from", description="Start from the production model, or from its base (the model "
        "production was fine-tuned from, as its train run's manifest records it; a LoRA production needs base).")
    old_data_fraction: float = Field(
        1.0, ge=0, le=1, description="Share of production's training records kept beside the new data (a seeded "
        "sample); its validation and test records are all kept, so the held-out set covers the old task too.")
    old_data_records: int | None = Field(
        None, ge=0, description="Keep this many old training records instead of a fraction.")
    seed: int = Field(0, description="Seed of the old-record sample.")
    gate: PromotionGate = Field(default_factory=PromotionGate)
