"""Move the `production` and `staging` aliases: promote a verified version, roll back to the one before; record a
refusal (a candidate a retrain gate kept out), which moves no alias.

Rollback replays the recorded decisions for the alias as a stack (promote pushes, rollback pops), so repeated
rollbacks walk back through every version that held the alias, and never forward again.
"""

from __future__ import annotations

from llmforge.errors import LlmforgeError
from llmforge.registry.decisions import Decision, history, record
from llmforge.registry.store import client, registry_errors, registry_uri
from llmforge.registry.versions import IntegrityError, registered_model, verify

ALIASES = ("production", "staging")


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise LlmforgeError(f"unknown alias '{alias}'; llmforge moves these: {', '.join(ALIASES)}")


def _set(name: str, alias: str, version: int, action: str, reason: str | None, uri: str) -> Decision:
    """Point `alias` at `version` once its files verify, and record the decision."""
    checked = verify(name, version, uri)
    if not checked.ok:
        raise IntegrityError(f"{name}@{version} ({checked.version.run_dir}) was modified after registration; "
                             f"refusing to {action} it:\n{checked.drift.describe()}", checked.drift)
    previous = registered_model(name, uri).aliases.get(alias)
    client(uri).set_registered_model_alias(name, alias, str(version))
    return record(name, action, alias, version, int(previous) if previous is not None else None, reason, uri)


@registry_errors
def refuse(name: str, version: int, against: int | None, *, reason: str | None = None,
           uri: str | None = None) -> Decision:
    """Record that `version` was not promoted (a retrain's gate refused it): no alias moves; `previous` is the
    production version it was compared with."""
    return record(name, "refuse", None, int(version), against, reason, registry_uri(uri))


@registry_errors
def promote(name: str, version: int | str, to: str = "production", *, reason: str | None = None,
            uri: str | None = None) -> Decision:
    """Point alias `to` (production | staging) at `version` of `name`, after verifying its files."""
    _check_alias(to)
    if not str(version).isdigit():
        raise LlmforgeError(f"promote takes a version number (NAME@3), not '{version}'")
    return _set(name, to, int(version), "promote", reason, registry_uri(uri))


def alias_stack(decisions: list[Decision], alias: str, current: int | None) -> list[int]:
    """The versions that held `alias`, oldest first, ending with the one holding it now (`current`)."""
    stack: list[int] = []
    for d in decisions:
        if d.alias != alias:
            continue
        if d.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != d.version:
            stack.append(d.version)
    if current is not None and (not stack or stack[-1] != current):  # moved outside llmforge (MLflow's UI)
        stack.append(current)
    return stack


@registry_errors
def rollback(name: str, alias: str = "production", *, reason: str | None = None,
             uri: str | None = None) -> Decision:
    """Point `alias` back at the version that held it before the current one."""
    _check_alias(alias)
    uri = registry_uri(uri)
    current = registered_model(name, uri).aliases.get(alias)
    stack = alias_stack(history(name, uri), alias, int(current) if current is not None else None)
    if len(stack) < 2:
        held = f"only version {stack[0]} has held it" if stack else "no version holds it"
        raise LlmforgeError(f"nothing to roll back to: {held} ('{name}' alias '{alias}'); promote a version "
                            f"instead: llmforge registry promote {name}@VERSION --to {alias}")
    return _set(name, alias, stack[-2], "rollback", reason, uri)
