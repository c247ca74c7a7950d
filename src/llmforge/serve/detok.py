"""Incremental detokenization with stop strings.

Text is released in pieces as tokens arrive. A piece is held back while it may still become part of a stop
string (so a stop string never leaks into the output) or while it ends inside a multi-byte character. The
streamed pieces concatenated are, by construction, the non-streamed text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class IncrementalText:
    """Turns a growing list of token ids into text deltas, cut at the first stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (cut at a stop string once one is found)
        self.sent = 0  # how much of `text` has been released
        # vLLM's window: decode ids[prefix:] against ids[prefix:read] so each step costs O(1), not O(length).
        self.prefix = 0
        self.read = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _new_text(self) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that can be released now."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += self._new_text()
        if self.stop:
            cut = self._find_stop(start)
            if cut is not None:
                self.text = self.text[:cut]
                self.stopped = True
                return self._release(len(self.text))
            return self._release(len(self.text) - self._held())
        return self._release(len(self.text))

    def flush(self) -> str:
        """At the end: release everything still held (including an unfinished character)."""
        if not self.stopped:
            tail = self._decode(self.ids[self.prefix:])[len(self._decode(self.ids[self.prefix:self.read])):]
            self.text += tail
            self.prefix = self.read = len(self.ids)
        return self._release(len(self.text))

    def _find_stop(self, start: int) -> int | None:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held(self) -> int:
        """Length of the longest tail of the text that is the beginning of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent:upto], upto
        return piece
