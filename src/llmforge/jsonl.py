"""Small JSONL files llmforge reads whole (an event log, a QA set): one JSON object a line, blank lines skipped, a
bad line named by file and line. Datasets go through `llmforge.data.readers`, which collects bad records instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmforge.errors import LlmforgeError


def read_objects(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of `path`; `what` (e.g. "the event log") names the file in
    an error when it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror or exc
        raise LlmforgeError(f"cannot read {what} {path}: {reason}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmforgeError(f"{path}, line {n}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LlmforgeError(f"{path}, line {n}: expected a JSON object")
        out.append((n, record))
    return out
