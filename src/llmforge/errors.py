"""Errors meant for people: each says what was wrong, where, and what is allowed.

The CLI prints these as one short paragraph instead of a traceback (see cli.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


class LlmforgeError(Exception):
    """A user-facing error. The message alone must be enough to fix the problem."""


class ConfigError(LlmforgeError):
    """A config key or value is wrong."""


class MissingExtraError(LlmforgeError):
    """An optional dependency is not installed."""


@dataclass(frozen=True)
class Problem:
    """One problem with one input record: where it is and what is wrong."""

    source: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        field = f" field '{self.field}':" if self.field else ""
        return f"{where}:{field} {self.message}"


class DataError(LlmforgeError):
    """Input data has problems; lists many at once rather than stopping at the first."""

    def __init__(self, problems: list[Problem], total: int | None = None, hint: str = "") -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        count = total if total is not None else len(problems)
        more = f"\n  ... and {count - 20} more" if count > 20 else ""
        tail = f"\n{hint}" if hint else ""
        super().__init__(f"{count} problem(s) in the input data:\n{shown}{more}{tail}")


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which llmforge extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"'{module}' is not installed; it comes with the '{extra}' extra: "
            f"pip install 'llmforge[{extra}]'"
        ) from exc
