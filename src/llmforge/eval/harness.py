"""lm-evaluation-harness on an llmforge model (a directory, run directory or 'demo'), in memory.

Offline use: built-in harness tasks download their data, so point `include_path` at a folder of task YAMLs whose
`dataset_path: json` reads local files (see configs/lm-eval/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmforge.errors import LlmforgeError, require


def run_harness(
    model: Any, tokenizer: Any, tasks: list[str], include_path: Path | None = None, limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Scores per task from `lm_eval.simple_evaluate` on an in-memory model, with the harness's metric names."""
    require("lm_eval", "lmeval")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if hasattr(model, "merge_and_unload"):  # a peft adapter: the harness wants a plain transformers model
        model = model.merge_and_unload()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" in {include_path} or" if include_path else ""
        raise LlmforgeError(f"unknown lm-eval task(s) {', '.join(unknown)}: not found{where} among the harness's tasks")
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False)
    return {task: {k: v for k, v in scores.items() if isinstance(v, (int, float))}
            for task, scores in results["results"].items()}
