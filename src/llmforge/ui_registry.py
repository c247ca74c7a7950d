"""How `llmforge registry` shows registered models, versions, decisions and verification (printing only)."""

from __future__ import annotations

from typing import Any

from llmforge.ui import say, show, table


def _version_row(v: Any) -> dict[str, Any]:
    return {"version": v.version, "aliases": ", ".join(v.aliases) or None, "kind": v.kind, "run dir": str(v.run_dir),
            "registered": f"{v.registered_at} by {v.registered_by}"}


def show_models(models: list[Any], uri: str) -> None:
    if not models:
        say(f"no registered models in {uri}; add one: llmforge registry register RUN_DIR --name NAME")
        return
    rows = [{"name": m.name, "versions": len(m.versions),
             **{a: m.aliases.get(a) for a in ("production", "staging")},
             "latest": m.versions[-1].run_dir if m.versions else None} for m in models]
    show(table(f"registered models ({uri})", rows))


def show_model(model: Any) -> None:
    show(table(f"{model.name}: versions", [_version_row(v) for v in model.versions]))
    rows = [{"#": d.number, "action": d.action, "alias": d.alias, "version": d.version, "previous": d.previous,
             "by": d.by, "at": d.at, "reason": d.reason} for d in model.decisions]
    show(table(f"{model.name}: decisions", rows))


def show_version(v: Any, manifest: dict[str, Any]) -> None:
    rows = [{"": "reference", "value": v.ref}, {"": "aliases", "value": ", ".join(v.aliases) or None},
            {"": "run dir", "value": str(v.run_dir)}, {"": "kind / command", "value": f"{v.kind} / {v.command}"},
            {"": "manifest sha256", "value": v.manifest_sha256},
            {"": "files pinned", "value": len(manifest.get("files") or {})},
            {"": "registered", "value": f"{v.registered_at} by {v.registered_by}"},
            {"": "mlflow run", "value": v.mlflow_run_id},
            *({"": "parent", "value": p} for p in v.parents),
            {"": "dataset fingerprint", "value": v.dataset_fingerprint},
            *({"": f"metric: {k}", "value": val} for k, val in sorted(v.metrics.items()))]
    show(table(f"{v.name} version {v.version}", rows))


def show_decision(d: Any, name: str) -> None:
    was = f" (was {d.previous})" if d.previous is not None else ""
    why = f": {d.reason}" if d.reason else ""
    say(f"{name}: {d.alias} -> version {d.version}{was}, {d.action} by {d.by} at {d.at}{why}")


def show_verification(checked: Any) -> None:
    v = checked.version
    if checked.ok:
        say(f"ok: {v.ref} ({v.run_dir}) matches the manifest it was registered with (sha256 {v.manifest_sha256})")
    else:
        say(f"MODIFIED: {v.ref} ({v.run_dir}) differs from the manifest it was registered with:\n"
            f"{checked.drift.describe()}")


def show_retrain(result: Any) -> None:
    """A retrain's gate, line by line, and the decision it led to."""
    m = result.metrics
    rows = [{"gate line": line["line"], "passed": line["passed"], "detail": line["detail"]}
            for line in m["gate"]["lines"]]
    show(table(f"{m['registry']}: {m['candidate']['ref']} against {m['production']['ref']}", rows))
    if m["promoted"]:
        say(f"promoted: {m['registry']} production -> version {m['candidate']['version']} "
            f"(was {m['production']['version']})")
    else:
        say(f"not promoted: {m['registry']} production stays version {m['production']['version']}; "
            f"{m['candidate']['ref']} is registered, refused ({', '.join(m['gate']['failed']) or m['reason']})")
    say(f"decision recorded in the registry (#{m['decision']['number']}) and in {result.output_dir / 'metrics.json'}")


def show_reloads(outcomes: list[Any]) -> None:
    for o in outcomes:
        say(f"{o.url}: {o.detail}" if o.ok else f"NOT RELOADED: {o.url}: {o.detail}")
    if not all(o.ok for o in outcomes):
        say("the alias moved; the servers above still serve what they loaded before: reload them "
            "(POST /admin/reload with the API key, or SIGHUP)")
