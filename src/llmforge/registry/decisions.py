"""Every decision on a registered model (register, promote, rollback), kept in the registry as numbered tags.

Each decision is one tag on the MLflow registered model, `llmforge.decision.000001` = {"action", "alias",
"version", "previous", "by", "at", "reason"}, so the alias history (who moved which alias, when, why) lives
beside the aliases and any MLflow client can read it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import asdict, dataclass

from llmforge.registry.store import client

TAG = "llmforge.decision."


@dataclass(frozen=True)
class Decision:
    """One recorded decision. `previous`: the version the alias pointed at before (None: it was unset)."""

    number: int
    action: str  # register | promote | rollback
    alias: str | None
    version: int
    previous: int | None
    by: str
    at: str
    reason: str | None = None


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def history(name: str, uri: str) -> list[Decision]:
    """The decisions on `name`, oldest first."""
    tags = client(uri).get_registered_model(name).tags
    found = [Decision(**json.loads(value)) for key, value in tags.items() if key.startswith(TAG)]
    return sorted(found, key=lambda d: d.number)


def record(name: str, action: str, alias: str | None, version: int, previous: int | None, reason: str | None,
           uri: str) -> Decision:
    """Append a decision to `name`'s history."""
    number = max((d.number for d in history(name, uri)), default=0) + 1
    decision = Decision(number, action, alias, version, previous, user(),
                        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), (reason or None))
    client(uri).set_registered_model_tag(name, f"{TAG}{number:06d}", json.dumps(asdict(decision)))
    return decision
