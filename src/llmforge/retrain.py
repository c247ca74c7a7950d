"""`llmforge retrain CONFIG --data NEW`: continuous training with a gate, one command a scheduler runs.

production (registry:NAME@production, pinned to its version number and verified)
  -> the data it was trained on: the prepared dataset its train run's manifest names as a parent
  -> prepare NEW with the starting model's tokenizer (the YAML's data section, data.path = NEW)
  -> mix: every new record, `retrain.old_data_fraction` of the old training records, all held-out records of both
  -> train the candidate from production (or its base) on the mix (the YAML's train section)
  -> eval the candidate and production on the mix's held-out split (the YAML's eval section: perplexity and any
     answer or harness metrics), and with `gate.export_fidelity` export the candidate (the export stage's parity)
  -> register the candidate; promote it only when every gate line passes, else record a refusal
  -> the decision, with every number and the line that failed, in the registry and in decision/metrics.json

Every run writes a new directory, `<output_dir>/retrain/<UTC time>/` (a registered version's files never change):
data-new/, data/, train/ (the candidate), eval-candidate/, eval-production/, export/ (with export_fidelity) and
decision/ (kind "retrain": its metrics.json is the decision).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from pathlib import Path
from typing import Any

from llmforge.artifacts import MANIFEST, RunDir, StageResult, read_manifest, sha256_file
from llmforge.errors import LlmforgeError
from llmforge.progress import Hooks
from llmforge.registry.gate import ANSWER_METRICS
from llmforge.stages import PipelineConfig, Stages

KEPT_METRICS = ("perplexity", "loss", "tokens", "samples", "generated_samples", "rouge1", "rouge2", "rougeL",
                "bertscore_f1", "coherence", "exact_match", "syntax_valid", "embedding_similarity", "repetition_rate",
                "harness")


def training_data(run_dir: Path, ref: str) -> Path:
    """The prepared dataset the model in `run_dir` was trained on: the prepared-dataset parent of the nearest train
    run in its lineage, checked against the manifest sha256 the child recorded and its own file hashes."""
    from llmforge.registry import check_files

    queue, seen = deque([Path(run_dir)]), set()
    while queue:
        current = queue.popleft()
        if current in seen or not (current / MANIFEST).is_file():
            continue
        seen.add(current)
        manifest = read_manifest(current)
        parents = manifest.get("parents") or []
        data = [p for p in parents if p.get("kind") == "prepared-dataset"]
        if manifest.get("command") in ("train", "retrain") and data:
            recorded = data[0]
            path = Path(recorded["path"])
            if not (path / MANIFEST).is_file():
                raise LlmforgeError(f"{ref} was trained on {path}, which is gone; retrain needs the old data "
                                    "(restore that prepared dataset, or register a model trained on data that exists)")
            if sha256_file(path / MANIFEST) != recorded.get("manifest_sha256"):
                raise LlmforgeError(f"{path} is not the prepared dataset {ref} was trained on (its manifest changed "
                                    f"since {current} recorded it)")
            drift = check_files(path, read_manifest(path)["files"])
            if not drift.ok:
                raise LlmforgeError(f"{path}, the data {ref} was trained on, was modified:\n{drift.describe()}")
            return path
        queue.extend(Path(p["path"]) for p in parents if p.get("kind") != "prepared-dataset" and p.get("path"))
    raise LlmforgeError(f"{ref} ({run_dir}) has no train run with a recorded prepared dataset in its lineage, so the "
                        "data it was trained on is unknown; retrain works on versions made by `llmforge train` "
                        "(or compressed/exported from one)")


def base_of(run_dir: Path, ref: str) -> str:
    """What the model in `run_dir` was fine-tuned from: its train run's manifest's base_model."""
    manifest = read_manifest(run_dir)
    base = manifest.get("base_model")
    if manifest.get("command") != "train" or not base:
        raise LlmforgeError(f"retrain.from=base: {ref} ({run_dir}, a '{manifest.get('kind')}' run made by "
                            f"'{manifest.get('command')}') records no base_model; only a train run's manifest "
                            "names its base. Use retrain.from=production")
    return str(base)


def _start(cfg: PipelineConfig, production_ref: str, production_dir: Path) -> str:
    """The model the candidate is fine-tuned from."""
    if cfg.retrain.from_ == "base":
        return base_of(production_dir, production_ref)
    manifest = read_manifest(production_dir)
    if manifest.get("adapter_dir") and not manifest.get("model_dir"):  # merged (train.merge) is a full model
        raise LlmforgeError(f"{production_ref} is a LoRA adapter run without a merged model; training cannot continue "
                            "from it. Set retrain.from=base (a fresh adapter on its base, trained on old plus new "
                            "data), or train with train.merge=true")
    return production_ref


def _check_measurable(cfg: PipelineConfig) -> None:
    """Fail before any training when a gate line asks for a metric the eval section will not produce."""
    opts = cfg.retrain
    if not opts.registry:
        raise LlmforgeError("retrain.registry is not set: name the registered model to retrain (retrain: {registry: "
                            "NAME} in the YAML, or --set retrain.registry=NAME)")
    answers = [m for m in opts.gate.max_metric_drop if m in ANSWER_METRICS]
    if answers and not cfg.eval.generate_samples:
        raise LlmforgeError(f"retrain.gate.max_metric_drop names {', '.join(answers)}, answer metrics that need "
                            "eval.generate_samples > 0 (answers to score)")
    if "embedding_similarity" in opts.gate.max_metric_drop and not cfg.eval.similarity_model:
        raise LlmforgeError("retrain.gate.max_metric_drop.embedding_similarity needs eval.similarity_model")


def _fresh(root: Path) -> Path:
    if root.exists() and any(root.iterdir()):
        raise LlmforgeError(f"{root} already holds a retrain; every retrain writes a new directory (the versions it "
                            "registers point at their files), so give another --output")
    return root


def _kept(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in KEPT_METRICS if k in metrics}


def _reason(passed: bool, lines: list[dict[str, Any]], production: int, root: Path) -> str:
    failed = [line["line"] for line in lines if not line["passed"]]
    head = "retrain gate passed" if passed else f"retrain gate failed ({', '.join(failed)})"
    return f"{head} against version {production}: " + "; ".join(line["detail"] for line in lines) + f"; run {root}"


def retrain(cfg: PipelineConfig, new_data: list[str], hooks: Hooks | None = None, *, output: Path | None = None,
            registry_uri: str | None = None) -> StageResult:
    """Fine-tune a candidate on production's data plus `new_data`, score it against production on the same
    held-out set, register it, and promote it when `cfg.retrain.gate` passes. Returns the decision run."""
    from llmforge import registry

    hooks = hooks or Hooks()
    _check_measurable(cfg)
    if not new_data:
        raise LlmforgeError("no new data: pass --data FILE (repeatable; files, globs or saved datasets)")
    opts, uri = cfg.retrain, registry.registry_uri(registry_uri)
    name = str(opts.registry)
    production = registry.version_info(name, "production", uri)
    production_ref = production.ref  # pinned: a promote elsewhere during the retrain changes nothing here
    production_dir = registry.resolve(production_ref, uri)
    old_data = training_data(production_dir, production_ref)
    start = _start(cfg, production_ref, production_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = _fresh(Path(output) if output else cfg.output_dir / "retrain" / stamp)
    timings: dict[str, float] = {}

    def timed(step: str, fn: Any) -> Any:
        hooks.stage(step)
        began = time.perf_counter()
        result = fn()
        timings[step] = time.perf_counter() - began
        return result

    candidate, evals, exported = _build(cfg, new_data, old_data, start, production_ref, root, hooks, timed)
    lines = opts.gate.check(evals["candidate"].metrics, evals["production"].metrics,
                            exported.metrics["formats"] if exported else None)
    passed = all(line["passed"] for line in lines)
    version = timed("register the candidate", lambda: registry.register(
        candidate, name, description=f"retrain of {production_ref} on {', '.join(new_data)}", uri=uri))
    reason = _reason(passed, lines, production.version, root)
    now = registry.version_info(name, "production", uri).version
    if passed and now != production.version:  # promoted elsewhere meanwhile: the comparison no longer holds
        passed = False
        reason = (f"production moved from version {production.version} to {now} during the retrain; the candidate "
                  f"was compared with {production.version}, so it is not promoted. " + reason)
    decision = (registry.promote(name, version.version, "production", reason=reason, uri=uri) if passed
                else registry.refuse(name, version.version, production.version, reason=reason, uri=uri))
    metrics = {
        "registry": name, "registry_uri": _without_password(uri), "promoted": passed,
        "decision": {"number": decision.number, "action": decision.action, "alias": decision.alias,
                     "version": decision.version, "previous": decision.previous, "by": decision.by,
                     "at": decision.at},
        "candidate": {"ref": version.ref, "version": version.version, "run_dir": str(version.run_dir),
                      **_kept(evals["candidate"].metrics)},
        "production": {"ref": production_ref, "version": production.version, "run_dir": str(production_dir),
                       **_kept(evals["production"].metrics)},
        "from": opts.from_, "start_model": start,
        "held_out": {"data": str(root / "data"), "split": cfg.eval.split},
        "data": {"new": list(new_data), "old": str(old_data), **read_metrics(root / "data")},
        "gate": {"passed": all(line["passed"] for line in lines), "failed": [li["line"] for li in lines
                                                                          if not li["passed"]],
                 "lines": lines, "config": opts.gate.model_dump(mode="json")},
        "reason": reason, "stage_seconds": timings,
    }
    parents = [production_dir, candidate, evals["candidate"].output_dir, evals["production"].output_dir,
               root / "data", *([exported.output_dir] if exported else [])]
    with RunDir(root / "decision", kind="retrain", command="retrain", config=cfg, parents=parents) as run:
        run.finish(metrics)
    return StageResult(root / "decision", metrics)


def _without_password(uri: str) -> str:
    """The registry URI as recorded: a password in it (http://user:secret@host) is not written to disk."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def _build(cfg: PipelineConfig, new_data: list[str], old_data: Path, start: str, production_ref: str, root: Path,
           hooks: Hooks, timed: Any) -> tuple[Path, dict[str, StageResult], StageResult | None]:
    """Prepare, mix, train, evaluate (and export): the candidate's run dir, both evals, the export run or None."""
    from llmforge.data.mix import mix_prepared
    from llmforge.eval.config import EvalConfig
    from llmforge.eval.runner import evaluate
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare
    from llmforge.train.config import TrainConfig
    from llmforge.train.runner import train

    stages, opts = Stages(cfg), cfg.retrain
    new_cfg = cfg.data.model_copy(update={"path": list(new_data), "validation_path": [], "test_path": []})
    timed("prepare the new data", lambda: prepare(
        PrepareConfig(model=stages.model(start), data=new_cfg, output_dir=root / "data-new"), hooks))
    mixed = timed("mix old and new data", lambda: mix_prepared(
        old_data, root / "data-new", root / "data", opts.old_data_fraction, opts.old_data_records, opts.seed))
    data = mixed.output_dir
    trained = timed("train the candidate", lambda: train(
        TrainConfig(model=stages.model(start), data=data, train=cfg.train, output_dir=root / "train"), hooks))
    candidate = trained.output_dir
    evals = {}
    for who, model in (("candidate", candidate), ("production", production_ref)):
        evals[who] = timed(f"eval {who}", lambda model=model, who=who: evaluate(
            EvalConfig(model=stages.model(model), data=data, eval=cfg.eval, output_dir=root / f"eval-{who}"), hooks))
    exported = None
    if opts.gate.export_fidelity:
        from llmforge.export.config import ExportConfig
        from llmforge.export.runner import export

        options = cfg.export if cfg.export.formats else cfg.export.model_copy(update={"formats": ["onnx"]})
        exported = timed("export fidelity", lambda: export(
            ExportConfig(model=stages.model(candidate), data=data, export=options, output_dir=root / "export"), hooks))
    return candidate, evals, exported
