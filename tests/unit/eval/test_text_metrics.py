from __future__ import annotations

import sys

import pytest

from llmforge.errors import MissingExtraError
from llmforge.metrics.text import (
    contains,
    exact_match,
    length_stats,
    python_syntax_valid,
    repetition_rate,
    rouge,
)


def test_rouge_identical_is_one_and_disjoint_is_zero() -> None:
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    )
    assert rouge(["alpha beta gamma"], ["delta epsilon zeta"]) == pytest.approx(
        {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    )


def test_rouge_partial_overlap_matches_hand_computation() -> None:
    # prediction "the cat sat" vs reference "the cat ran away"
    # rouge1: 2 shared unigrams, P = 2/3, R = 2/4 -> F = 2PR / (P + R) = 4/7
    # rouge2: 1 shared bigram ("the cat"), P = 1/2, R = 1/3 -> F = 2/5
    # rougeL: LCS "the cat" has length 2 -> same as rouge1, 4/7
    got = rouge(["the cat sat"], ["the cat ran away"])
    assert got == pytest.approx({"rouge1": 4 / 7, "rouge2": 2 / 5, "rougeL": 4 / 7})


def test_rouge_averages_pairs_and_ignores_case_and_punctuation() -> None:
    got = rouge(["The CAT, sat!", "alpha"], ["the cat sat", "omega"])
    assert got == pytest.approx({"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5})


def test_rouge_rejects_unequal_lengths_naming_both() -> None:
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        rouge(["a", "b"], ["a", "b", "c"])


def test_rouge_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes `import rouge_score` raise ImportError
    with pytest.raises(MissingExtraError, match=r"llmforge\[eval\]"):
        rouge(["a"], ["a"])


def test_exact_match_normalizes_whitespace_only_when_asked() -> None:
    assert exact_match("  Paris \n is  nice ", "Paris is nice") == 1.0
    assert exact_match("  Paris \n is  nice ", "Paris is nice", normalize=False) == 0.0
    assert exact_match("paris", "Paris") == 0.0  # case is kept
    assert exact_match(["a", " b ", "c"], ["a", "b", "x"]) == pytest.approx(2 / 3)


def test_contains_scores_substring_of_prediction() -> None:
    assert contains("The answer is  42.", "is 42") == 1.0
    assert contains("The answer is 4", "42") == 0.0
    assert contains(["yes, 42", "no", "41 or 42"], ["42", "42", "42"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="reference 0 is empty"):
        contains("anything", "  ")


def test_pairwise_text_metrics_validate_inputs() -> None:
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="3 predictions but 1 references"):
        contains(["a", "b", "c"], ["a"])
    with pytest.raises(TypeError, match="two strings or two sequences"):
        exact_match("abc", ["abc"])  # a lone str would otherwise be paired character by character
    with pytest.raises(ValueError, match="no predictions"):
        exact_match([], [])


def test_python_syntax_valid() -> None:
    assert python_syntax_valid("def f(x):\n    return x + 1\n")
    assert not python_syntax_valid("def f(x)\n    return x + 1\n")
    assert not python_syntax_valid("print('unclosed")
    assert not python_syntax_valid("   \n")  # no code at all
    assert python_syntax_valid("import re\npattern = '\\d+'\n")  # invalid escape warns, but is valid syntax


def test_python_syntax_valid_unwraps_a_fenced_block() -> None:
    fenced = "```python\ndef f(x):\n    return x * 2\n```"
    assert python_syntax_valid(fenced)
    assert python_syntax_valid("\n```py\nx = 1\n```\n")
    assert python_syntax_valid("```\nx = 1\n```")
    assert not python_syntax_valid("```python\ndef f(:\n```")
    assert not python_syntax_valid("Here it is:\n```python\nx = 1\n```")  # prose outside the fence is not code


def test_repetition_rate_hand_example() -> None:
    # words: a b c a b c a -> trigrams abc, bca, cab, abc, bca: 5 total, 3 unique -> 1 - 3/5
    assert repetition_rate("a b c a b c a") == pytest.approx(0.4)
    # bigrams: "the cat", "cat the", "the cat": 3 total, 2 unique
    assert repetition_rate("the cat the cat", n=2) == pytest.approx(1 - 2 / 3)
    assert repetition_rate("all different words here") == 0.0
    assert repetition_rate("too short") == 0.0
    assert repetition_rate("x x x x x x", n=1) == pytest.approx(1 - 1 / 6)
    with pytest.raises(ValueError, match="n-gram"):
        repetition_rate("a b c", n=0)


def test_length_stats() -> None:
    stats = length_stats(["a", "bb cc", "dddd eee ffff gg"])
    assert stats == pytest.approx({"mean_chars": (1 + 5 + 16) / 3, "median_chars": 5.0,
                                   "mean_words": (1 + 2 + 4) / 3, "median_words": 2.0})
    with pytest.raises(ValueError, match="no texts"):
        length_stats([])
