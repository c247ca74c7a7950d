"""Perplexity by script: the dominant-script classifier on hand-made strings, `score`'s per-group sums from the same
forward passes, and `llmforge eval` on a mixed-script split (per-script perplexities whose token-weighted
combination is the overall perplexity; one script: no breakdown)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmforge.metrics.score import score
from llmforge.metrics.scripts import SCRIPTS, char_script, dominant_script
from llmforge.metrics.tokens import IGNORE
from tests.helpers import qa_records, write_jsonl
from tests.multilingual import QUESTIONS, mixed_script_records


@pytest.mark.parametrize(("text", "script"), [
    ("The quick brown fox", "Latin"),
    ("café naïve Ångström", "Latin"),
    ("法国的首都是巴黎。", "Han"),
    ("日本語のテキスト", "Hiragana/Katakana"),  # kanji count with kana: Japanese
    ("カタカナ ｶﾀｶﾅ", "Hiragana/Katakana"),
    ("안녕하세요 세계", "Hangul"),
    ("مَرْحَبًا بِالْعَالَمِ", "Arabic"),  # harakat are marks of their script
    ("नमस्ते दुनिया क्षत्रिय", "Devanagari"),  # virama and vowel signs too
    ("Привет, мир", "Cyrillic"),
    ("Γειά σου κόσμε", "other"),
    ("👩🏽\u200d💻 🇯🇵 1️⃣ 123 !?", "other"),  # no letters at all
    ("", "other"),
    ("ok: 프랑스의 수도는 파리입니다", "Hangul"),  # the majority of letters, not the first
    ("السعر 42 دولار ok", "Arabic"),
])
def test_dominant_script_of_hand_made_strings(text: str, script: str) -> None:
    assert dominant_script(text) == script


def test_char_script_ignores_digits_punctuation_and_emoji_but_counts_marks() -> None:
    assert [char_script(c) for c in "a1 !🙂"] == ["Latin", None, None, None, None]
    assert char_script("\u094d") == "Devanagari" and char_script("\u064e") == "Arabic"  # virama, fatha
    assert char_script("α") == "other"


def test_the_mixed_script_records_are_in_the_scripts_they_claim() -> None:
    for script, pairs in QUESTIONS.items():
        assert script in SCRIPTS and all(dominant_script(q) == dominant_script(a) == script for q, a in pairs)


def test_a_tie_goes_to_the_script_listed_first() -> None:
    assert dominant_script("ab 가나") == "Latin" and dominant_script("가나 ab") == "Latin"


def test_score_groups_add_up_and_each_is_its_samples_alone(tiny_model_dir: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.manual_seed(0)
    rows = []
    for length in (5, 9, 14, 3, 11, 30):
        ids = torch.randint(5, 200, (length,)).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * (length // 2) + ids[length // 2 :]})
    groups = ["a", "b", "a", "c", "b", "a"]
    dataset = Dataset.from_list(rows)
    for window in (None, 8):  # padded batches, and sliding windows for the long ones
        got = score(model, dataset, batch_size=4, window=window, groups=groups)
        by = got["by_group"]
        assert sum(g["tokens"] for g in by.values()) == got["tokens"]
        assert sum(g["samples"] for g in by.values()) == len(rows)
        assert sum(g["nll_sum"] for g in by.values()) == pytest.approx(got["nll_sum"], rel=1e-6)
        for name, g in by.items():
            alone = score(model, dataset.select([i for i, x in enumerate(groups) if x == name]), window=window)
            assert g["tokens"] == alone["tokens"] and g["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-4)
    assert "by_group" not in score(model, dataset)
    with pytest.raises(ValueError, match="2 labels for 6 samples"):
        score(model, dataset, groups=["a", "b"])


def _prepare(tiny_model_dir: Path, root: Path, records: list[dict]) -> Path:
    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    data = write_jsonl(root / "data.jsonl", records)
    return prepare(PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                                 data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.0, test=0.0)),
                                 output_dir=root / "prep")).output_dir


def _evaluate(tiny_model_dir: Path, prepared: Path, out: Path) -> dict:
    from llmforge.config import ModelConfig
    from llmforge.eval.config import EvalConfig, EvalOptions
    from llmforge.eval.runner import evaluate

    return evaluate(EvalConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                               eval=EvalOptions(split="train", batch_size=5), output_dir=out)).metrics


def test_eval_reports_perplexity_by_script_on_a_mixed_split(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from llmforge.ui import show_metrics

    records = mixed_script_records(copies=2)
    metrics = _evaluate(tiny_model_dir, _prepare(tiny_model_dir, tmp_path, records), tmp_path / "eval")
    by = metrics["perplexity_by_script"]
    assert set(by) == set(QUESTIONS)  # each answer's own script, not the chat template's Latin around it
    assert all(by[s]["samples"] == 2 * len(QUESTIONS[s]) for s in by)
    assert sum(g["tokens"] for g in by.values()) == metrics["tokens"]
    # token-weighted: exp(sum_s tokens_s * ln ppl_s / tokens) is the overall perplexity; a mean of the
    # per-script perplexities (or a sample-weighted one) is not, since scripts cost different token counts here
    combined = math.exp(sum(g["tokens"] * math.log(g["perplexity"]) for g in by.values()) / metrics["tokens"])
    assert combined == pytest.approx(metrics["perplexity"], rel=1e-6)
    assert len({g["tokens"] for g in by.values()}) > 1
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["perplexity_by_script"] == by
    show_metrics("evaluation", metrics, tmp_path / "eval")
    printed = capsys.readouterr().out
    assert "perplexity by script" in printed and "Devanagari" in printed and "Hangul" in printed


def test_eval_on_one_script_reports_no_breakdown(tiny_model_dir: Path, tmp_path: Path) -> None:
    metrics = _evaluate(tiny_model_dir, _prepare(tiny_model_dir, tmp_path, qa_records(12)), tmp_path / "eval")
    assert "perplexity_by_script" not in metrics and "by_group" not in metrics
