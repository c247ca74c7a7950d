"""The dominant Unicode script of a text, so that a perplexity over a mixed-language split can be broken down by
script (a tokenizer trained mostly on English spends many more tokens per character on Hangul or Devanagari, and a
single perplexity over both hides that). Pure functions over `unicodedata` names; no model, no tokenizer."""

from __future__ import annotations

import unicodedata
from collections import Counter

SCRIPTS = ("Latin", "Han", "Hiragana/Katakana", "Hangul", "Arabic", "Devanagari", "Cyrillic", "other")
OTHER = "other"
_PREFIXES = (  # unicodedata name prefix -> script; the first match wins
    ("LATIN", "Latin"), ("CJK UNIFIED IDEOGRAPH", "Han"), ("CJK COMPATIBILITY IDEOGRAPH", "Han"),
    ("HIRAGANA", "Hiragana/Katakana"), ("KATAKANA", "Hiragana/Katakana"),
    ("HALFWIDTH KATAKANA", "Hiragana/Katakana"), ("HANGUL", "Hangul"), ("HALFWIDTH HANGUL", "Hangul"),
    ("ARABIC", "Arabic"), ("DEVANAGARI", "Devanagari"), ("CYRILLIC", "Cyrillic"),
)


def char_script(char: str) -> str | None:
    """The script of one letter or combining mark (Devanagari's vowel signs, Arabic's harakat count with their
    script); None for what belongs to no script: digits, punctuation, spaces, symbols and emoji."""
    if unicodedata.category(char)[0] not in "LM":
        return None
    name = unicodedata.name(char, "")
    return next((script for prefix, script in _PREFIXES if name.startswith(prefix)), OTHER)


def dominant_script(text: str) -> str:
    """The script most of `text`'s letters are written in: one of SCRIPTS ("other" when it has no letters, or
    most are in a script not listed, e.g. Greek or Thai). Japanese writes with kanji and kana together, so Han
    letters count as Hiragana/Katakana in a text that has any kana; ties go to the script listed first."""
    counts = Counter(s for s in map(char_script, text) if s)
    if not counts:
        return OTHER
    if counts["Hiragana/Katakana"]:
        counts["Hiragana/Katakana"] += counts.pop("Han", 0)
    return max(SCRIPTS, key=lambda s: (counts[s], -SCRIPTS.index(s)))
