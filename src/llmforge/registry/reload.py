"""Tell running servers that an alias moved: POST /admin/reload to each, as `--reload URL` of `registry promote`,
`registry rollback` and `retrain` does. The server re-resolves every reference (`registry:NAME@production` included),
loads and warms the new version while the old one keeps serving, then swaps and drains the old
(llmforge.serve.rollout), so a promotion or a rollback is one command and drops no request.

A plain HTTP client (stdlib): the registry needs no server code, and a server of another llmforge version answers
the same route.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

RELOAD_PATH = "/admin/reload"


@dataclass(frozen=True)
class ReloadOutcome:
    url: str  # the endpoint posted to
    ok: bool
    detail: str  # what the server reloaded, or why it did not


def reload_endpoint(url: str) -> str:
    """`url` (a server's base URL, or its /admin/reload) as the reload endpoint; only http(s) URLs are allowed."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--reload {url!r}: give a server's http(s) URL, e.g. http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith(RELOAD_PATH):
        path += RELOAD_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def reload_servers(urls: Sequence[str], api_key: str | None, timeout: float = 600.0) -> list[ReloadOutcome]:
    """POST an empty reload (every served name, references resolved again) to each server, one after the other so
    replicas never all load at once; the outcome of each. A server answers once the new models serve, so `timeout`
    covers loading and warming a model."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    outcomes = []
    for url in urls:
        endpoint = reload_endpoint(url)
        request = urllib.request.Request(endpoint, data=b"{}", headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
                body = json.loads(response.read(1 << 20) or b"{}")
            outcomes.append(ReloadOutcome(endpoint, True, "reloaded " + ", ".join(body.get("reloaded") or ["-"])))
        except urllib.error.HTTPError as exc:
            outcomes.append(ReloadOutcome(endpoint, False, f"HTTP {exc.code}: {_message(exc)}"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcomes.append(ReloadOutcome(endpoint, False, str(getattr(exc, "reason", exc))))
    return outcomes


def _message(exc: urllib.error.HTTPError) -> str:
    """The OpenAI-style error message of a refusal, else its body's start."""
    raw = exc.read(1 << 16).decode("utf-8", "replace")
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:200] or exc.reason
