"""`llmforge eval` on a preference split: the trained model's reward accuracy and margins against its reference, the
same numbers training reports for its held-out pairs, and the errors a user meets."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.config import ModelConfig
from llmforge.errors import ConfigError
from llmforge.eval.config import EvalConfig, EvalOptions
from llmforge.eval.runner import evaluate
from llmforge.train.runner import train
from tests.unit.train.test_preference import _cfg, pairs  # noqa: F401 - the prepared pairs fixture

pytest.importorskip("trl")


def _eval(model: Path | str, data: Path, out: Path, **opts) -> dict:
    cfg = EvalConfig(model=ModelConfig(name_or_path=str(model), dtype="float32"), data=data,
                     eval=EvalOptions(split="validation", **opts), output_dir=out)
    return evaluate(cfg).metrics


def test_eval_scores_a_dpo_run_as_training_did(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "dpo"
    trained = train(_cfg(tiny_model_dir, pairs, run, max_steps=8, learning_rate=1e-2,
                         preference={"beta": 0.2})).metrics
    m = _eval(run, pairs, tmp_path / "ev")
    assert m["pairs"] == trained["eval_pairs"] == 16 and m["beta"] == 0.2  # the run's beta, read from its config
    assert "adapter off" in m["reference"]
    for key in ("reward_accuracy", "reward_margin", "logp_accuracy", "logp_margin"):
        assert m[key] == pytest.approx(trained[f"eval_{key}"], abs=1e-3), key
    assert m["reward_accuracy"] >= 0.9 and m["reward_margin"] > 0

    base = _eval(tiny_model_dir, pairs, tmp_path / "base")  # no reference: the model's own log-probabilities only
    assert base["reference"] is None and "reward_accuracy" not in base
    assert base["logp_margin"] == pytest.approx(trained["eval_logp_margin_before"], abs=1e-3)
    named = _eval(run, pairs, tmp_path / "named", reference=str(tiny_model_dir), beta=0.5)
    assert named["reward_margin"] == pytest.approx(m["reward_margin"] * 0.5 / 0.2, rel=1e-3)


def test_pairs_refuse_answer_metrics_and_empty_splits_are_named(tiny_model_dir: Path, pairs: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.generate_samples: .* preference pairs"):
        _eval(tiny_model_dir, pairs, tmp_path / "a", generate_samples=2)
    cfg = EvalConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=pairs, output_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="eval.split: split 'test' of .* is empty"):
        evaluate(cfg)


def test_the_pipeline_names_a_reference_only_for_full_weights(tmp_path: Path) -> None:
    """`llmforge run` with a preference method: a fully trained model is scored against its base (eval.reference);
    an adapter run is scored against its adapter turned off, with no second copy loaded; the base eval needs none."""
    from llmforge.stages import PipelineConfig, Stages

    for weights, expected in (("full", "base-model"), ("lora", None)):
        cfg = PipelineConfig(model={"name_or_path": "base-model"}, output_dir=tmp_path,
                             train={"method": "dpo", "preference": {"weights": weights}})
        stages = Stages(cfg)
        assert stages.eval(model=tmp_path / "train").eval.reference == expected
        assert stages.eval().eval.reference is None
    sft = Stages(PipelineConfig(model={"name_or_path": "base-model"}, output_dir=tmp_path))
    assert sft.eval(model=tmp_path / "train").eval.reference is None
