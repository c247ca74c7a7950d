"""Text metrics as pure functions: ROUGE, exact match, containment, Python syntax validity, repetition, lengths.

Pairwise metrics take either one (prediction, reference) pair of strings or two equally long sequences of strings,
and return the mean over pairs. ROUGE is rouge-score's (the 'eval' extra), imported only when called.
"""

from __future__ import annotations

import ast
import re
import statistics
import warnings
from collections.abc import Sequence

from llmforge.errors import require

_FENCE = re.compile(r"\A\s*```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL | re.IGNORECASE)


def _pairs(predictions: str | Sequence[str], references: str | Sequence[str], metric: str) -> list[tuple[str, str]]:
    """Pair predictions with references, saying what is wrong when they do not pair up one to one."""
    if isinstance(predictions, str) and isinstance(references, str):
        return [(predictions, references)]
    if isinstance(predictions, str) or isinstance(references, str):
        # a lone str is itself a Sequence[str] of characters; pairing it element-wise would be silently wrong
        raise TypeError(
            f"{metric}: pass two strings or two sequences of strings, got "
            f"{type(predictions).__name__} predictions and {type(references).__name__} references"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"{metric}: {len(predictions)} predictions but {len(references)} references; they must pair up one to one"
        )
    if len(predictions) == 0:
        raise ValueError(f"{metric}: no predictions to score")
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str) or not isinstance(ref, str):
            raise TypeError(
                f"{metric}: pair {i} must be two strings, got {type(pred).__name__} and {type(ref).__name__}"
            )
    return list(zip(predictions, references))


def _normalize(text: str) -> str:
    """Strip the ends and collapse every run of whitespace to one space; case and punctuation are kept."""
    return " ".join(text.split())


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures over prediction/reference pairs, each in [0, 1].

    Uses rouge-score's default tokenizer, no stemming: text is lowercased and every run of characters other than
    a-z and 0-9 splits tokens and is dropped, so punctuation and non-Latin scripts do not count (a pair with no
    such tokens scores 0). ROUGE-L is sentence-level LCS, not the newline-split 'rougeLsum'.
    """
    pairs = _pairs(predictions, references, "rouge")
    require("rouge_score", "eval")
    from rouge_score import rouge_scorer

    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=False)
    totals = dict.fromkeys(names, 0.0)
    for pred, ref in pairs:
        scores = scorer.score(ref, pred)  # rouge-score's order is (target, prediction)
        for name in names:
            totals[name] += scores[name].fmeasure
    return {name: totals[name] / len(pairs) for name in names}


def exact_match(pred: str | Sequence[str], ref: str | Sequence[str], normalize: bool = True) -> float:
    """Fraction of pairs whose prediction equals the reference (1.0 or 0.0 for a single pair).

    normalize strips the ends and collapses whitespace runs before comparing; case and punctuation still count.
    """
    pairs = _pairs(pred, ref, "exact_match")
    clean = _normalize if normalize else (lambda text: text)
    return sum(clean(p) == clean(r) for p, r in pairs) / len(pairs)


def contains(pred: str | Sequence[str], ref: str | Sequence[str], normalize: bool = True) -> float:
    """Fraction of pairs whose prediction contains the reference as a substring (1.0 or 0.0 for a single pair).

    normalize strips and collapses whitespace in both first. An empty reference is an error: every text would
    contain it.
    """
    pairs = _pairs(pred, ref, "contains")
    clean = _normalize if normalize else (lambda text: text)
    hits = 0
    for i, (p, r) in enumerate(pairs):
        if not clean(r):
            raise ValueError(f"contains: reference {i} is empty, and every prediction contains an empty string")
        hits += clean(r) in clean(p)
    return hits / len(pairs)


def python_syntax_valid(code: str) -> bool:
    """Whether `code` parses as Python (syntax only; nothing is run or imported).

    Code wrapped whole in one Markdown fence (```python, ```py or bare ```) is unwrapped first; prose around a
    fence is not stripped and makes the text invalid. Empty or whitespace-only code is False: no program was given.
    """
    match = _FENCE.match(code)
    body = match.group(1) if match else code
    if not body.strip():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d": valid syntax, and metrics do not print
            ast.parse(body)
    except (SyntaxError, ValueError, RecursionError):  # ValueError: null bytes; RecursionError: absurd nesting
        return False
    return True


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of the word n-grams in `text` that repeat an earlier one: 1 - unique / total.

    Words are whitespace-separated and compared exactly (case and punctuation count). 0.0 for texts with fewer
    than n words; near 1.0 for degenerate loops like "the the the ...".
    """
    if n < 1:
        raise ValueError(f"n must be a positive n-gram size, got {n}")
    words = text.split()
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Mean and median length of `texts` in characters and in whitespace-separated words."""
    if isinstance(texts, str):
        raise TypeError("length_stats: pass a sequence of strings, not one string")
    if len(texts) == 0:
        raise ValueError("length_stats: no texts given")
    chars = [len(t) for t in texts]
    words = [len(t.split()) for t in texts]
    return {
        "mean_chars": float(statistics.mean(chars)),
        "median_chars": float(statistics.median(chars)),
        "mean_words": float(statistics.mean(words)),
        "median_words": float(statistics.median(words)),
    }
