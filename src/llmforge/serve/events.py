"""The server's event log: what `llmforge ab report` reads, and the recent responses feedback may name.

With `event_log: DIR`, one JSON object per line is appended to
  DIR/events.jsonl   {"event": "request", ...} per generation request (variant, HTTP status, latency, tokens)
                     {"event": "feedback", ...} per accepted /v1/feedback (the variant it names, its score)
  DIR/shadow.jsonl   {"event": "shadow", ...} per request copied to a shadow model (its answer, or its error)
A file is the record, not /metrics: a report needs each request's latency (a histogram only has buckets), it
must survive restarts and reloads (counters reset), and several replicas' files can simply be concatenated.

Without a directory nothing is written; feedback still finds its response among the last `remember` ones kept
in memory (a response older than that, or from before a restart, is unknown: 404).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, TextIO

from llmforge.errors import LlmforgeError
from llmforge.jsonl import read_objects

EVENTS, SHADOW_LOG = "events.jsonl", "shadow.jsonl"
ID_PREFIXES = ("chatcmpl-", "cmpl-")  # a response id is its request id behind one of these


class EventLog:
    def __init__(self, directory: Path | None, remember: int = 100_000) -> None:
        self.directory = directory
        self.remember = remember
        self.recent: OrderedDict[str, tuple[str, str]] = OrderedDict()  # request id -> (served name, variant)
        self._files: dict[str, TextIO] = {}
        self._lock = threading.Lock()  # lines come from the event loop and from engine threads

    def write(self, name: str, record: dict[str, Any]) -> None:
        if self.directory is None:
            return
        line = json.dumps({"ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), **record})
        with self._lock:
            f = self._files.get(name)
            if f is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                f = self._files[name] = (self.directory / name).open("a", encoding="utf-8")
            f.write(line + "\n")
            f.flush()  # a report (or a crash) sees every finished request

    def request(self, state: dict[str, Any], path: str, status: int, latency_s: float) -> None:
        """One generation request, answered (called once its response has been sent, streams included)."""
        rid, model, variant = state.get("request_id", ""), state["model"], state.get("variant", "")
        self.recent[rid] = (model, variant)
        self.recent.move_to_end(rid)
        while len(self.recent) > self.remember:
            self.recent.popitem(last=False)
        usage = [r.usage() for r in state.get("results", [])]
        self.write(EVENTS, {
            "event": "request", "request_id": rid, "path": path, "model": model, "variant": variant,
            "status": status, "latency_s": round(latency_s, 6),
            "prompt_tokens": sum(u[0] for u in usage), "completion_tokens": sum(u[1] for u in usage),
        })

    def lookup(self, response_id: str) -> tuple[str, str, str] | None:
        """(request id, served name, variant) of a recent response, by its `id` or its X-Request-Id."""
        for rid in (response_id, *(response_id[len(p):] for p in ID_PREFIXES if response_id.startswith(p))):
            if rid in self.recent:
                return (rid, *self.recent[rid])
        return None

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


def read_events(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL event log (a file, or a directory holding events.jsonl); a bad line names itself."""
    path = path / EVENTS if path.is_dir() else path
    records = []
    for n, record in read_objects(path, "the event log"):
        if "event" not in record:
            raise LlmforgeError(f"{path}, line {n}: an event needs an 'event' field")
        records.append(record)
    return records
