"""`llmforge tune CONFIG`: search learning rate, LoRA rank and epochs with Optuna; eval loss is the objective.

The data is prepared once; each trial is an ordinary train run directory under `<output>/trials/`, and every
trial (parameters, eval loss, state) is recorded in `<output>/tune/trials.json` as soon as it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.artifacts import RunDir, write_json
from llmforge.config import Section
from llmforge.errors import require
from llmforge.stages import PipelineConfig, Stages


class SearchSpace(Section):
    learning_rate: tuple[float, float] = (1e-4, 3e-3)
    lora_r: list[int] = [4, 8, 16, 32]
    epochs: list[float] = [1, 2, 3]


@dataclass
class TuneResult:
    output_dir: Path
    best: dict[str, Any]
    trials: list[dict[str, Any]]


def tune(cfg: PipelineConfig, n_trials: int, space: SearchSpace | None = None, seed: int = 0) -> TuneResult:
    optuna = require("optuna", "tune")
    from llmforge.prepare.runner import prepare
    from llmforge.train.runner import train

    space = space or SearchSpace()
    stages = Stages(cfg)
    dirs = stages.dirs
    prepare(stages.prepare())
    out = cfg.output_dir / "tune"
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {
            "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
            "epochs": trial.suggest_categorical("epochs", space.epochs),
        }
        lora = cfg.train.lora
        if cfg.train.method in ("lora", "dora"):
            lora = lora.model_copy(update={"r": trial.suggest_categorical("lora_r", space.lora_r)})
        options = cfg.train.model_copy(update={**params, "lora": lora, "merge": False})
        trial_cfg = stages.train(output=cfg.output_dir / "trials" / f"trial-{trial.number}")
        result = train(trial_cfg.model_copy(update={"train": options}))
        return float(result.metrics["eval_loss"])

    def record(study: Any, trial: Any) -> None:
        records.append({"number": trial.number, "params": trial.params, "eval_loss": trial.value,
                        "state": trial.state.name, "run_dir": str(cfg.output_dir / "trials" / f"trial-{trial.number}")})
        write_json(out.with_name("tune.trials.json"), records)  # every trial kept, even if a later one crashes

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials, callbacks=[record])
    best = {"number": study.best_trial.number, "params": study.best_params, "eval_loss": study.best_value}
    with RunDir(out, kind="tune", command="tune", config=cfg, parents=[dirs["prepare"]]) as run:
        write_json(run.file("trials.json"), records)
        run.finish({"best": best, "trials": len(records)})
    return TuneResult(out, best, records)
