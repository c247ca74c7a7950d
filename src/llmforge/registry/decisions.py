"""Every decision on a registered model (register, promote, rollback), kept in the registry as numbered tags.

Each decision is one tag on the MLflow registered model, `llmforge.decision.<ns since 1970>-<random>` =
{"action", "alias", "version", "previous", "by", "at", "reason"}, so the alias history (who moved which alias, when,
why) lives beside the aliases and any MLflow client can read it. Keys sort by time and never collide, so two people
deciding at once both keep their record; a decision's number is its place in that order.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import secrets
import time
from dataclasses import dataclass

from llmforge.registry.store import client

TAG = "llmforge.decision."


@dataclass(frozen=True)
class Decision:
    """One recorded decision. `previous`: the version the alias pointed at before (None: it was unset)."""

    number: int
    action: str  # register | promote | rollback | refuse (a retrain gate kept the version out)
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


def _tagged(name: str, uri: str) -> dict[str, Decision]:
    """{tag key: decision}, oldest first."""
    tags = client(uri).get_registered_model(name).tags
    found = sorted((key, value) for key, value in tags.items() if key.startswith(TAG))
    return {key: Decision(number, **json.loads(value)) for number, (key, value) in enumerate(found, 1)}


def history(name: str, uri: str) -> list[Decision]:
    """The decisions on `name`, oldest first."""
    return list(_tagged(name, uri).values())


def record(name: str, action: str, alias: str | None, version: int, previous: int | None, reason: str | None,
           uri: str) -> Decision:
    """Append a decision to `name`'s history."""
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    fields = {"action": action, "alias": alias, "version": version, "previous": previous, "by": user(), "at": at,
              "reason": (reason or "")[:1000] or None}  # a tag value, kept short
    key = f"{TAG}{time.time_ns():020d}-{secrets.token_hex(4)}"
    client(uri).set_registered_model_tag(name, key, json.dumps(fields))
    return _tagged(name, uri)[key]
