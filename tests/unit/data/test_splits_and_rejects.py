"""Exact split sizes from a seeded hash order (issue #13.15); every reject written, printing capped (#13.11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.config import ModelConfig
from llmforge.data.config import DataConfig, SplitConfig
from llmforge.data.splits import plan_splits, share, unit_hash
from llmforge.prepare.config import PrepareConfig
from llmforge.prepare.runner import prepare
from tests.helpers import qa_records, write_jsonl


def _cfg(model: Path, data: Path, out: Path, **opts) -> PrepareConfig:
    return PrepareConfig(model=ModelConfig(name_or_path=str(model)), data=DataConfig(path=[str(data)], **opts),
                         output_dir=out)


@pytest.mark.parametrize("n", [1, 7, 20, 400, 1001])
def test_plan_gives_exact_counts_rounded_half_up(n: int) -> None:
    us = [unit_hash(3, f"record {i}") for i in range(n)]
    plan = plan_splits(us, test=0.05, validation=0.10)
    got = {"train": 0, "validation": 0, "test": 0}
    for u in us:
        got[plan.split(u)] += 1
    assert got == plan.counts
    assert got["test"] == int(n * 0.05 + 0.5) and got["validation"] == min(n - got["test"], int(n * 0.10 + 0.5))


def test_plan_counts_a_repeated_key_once_and_keeps_the_hash_order() -> None:
    us = [0.9, 0.1, 0.1, 0.5, 0.3]  # four distinct keys
    plan = plan_splits(us, test=0.25, validation=0.25)
    assert plan.counts == {"train": 2, "validation": 1, "test": 1}
    assert [plan.split(u) for u in (0.1, 0.3, 0.5, 0.9)] == ["test", "validation", "train", "train"]


def test_share_rounds_half_up_and_never_exceeds_n() -> None:
    assert [share(50, 0.05), share(30, 0.05), share(10, 0.05), share(3, 1.0)] == [3, 2, 1, 3]


def test_prepare_makes_the_asked_fractions_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(120))
    report = prepare(_cfg(tiny_model_dir, data, tmp_path / "o", split=SplitConfig(test=0.05, validation=0.10))).metrics
    # Before: each record drawn on its own, so 5% / 10% came out as 3.75% / 9.25% on a small set.
    assert report["samples"] == {"train": 102, "validation": 12, "test": 6}


def test_every_reject_is_written_and_printing_is_capped(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from llmforge.ui import show_rejects

    bad = ['{"input": "x", "output": 5}'] * 1200  # more than the 1,000 rows rejects.jsonl used to stop at
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join([json.dumps(r) for r in qa_records(30)] + bad) + "\n", encoding="utf-8")
    result = prepare(_cfg(tiny_model_dir, data, tmp_path / "o", strict=False))
    rejects = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == result.metrics["dropped"]["invalid_record"] == 1200
    assert [r["line"] for r in rejects] == list(range(31, 1231))
    show_rejects(tmp_path / "o" / "rejects.jsonl", shown=5)
    out = capsys.readouterr().out
    assert "skipped 1,200 invalid record(s)" in out and out.count(f"{data}:") == 5
    assert "... and 1,195 more" in out


def test_no_rejects_file_when_nothing_was_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(30))
    prepare(_cfg(tiny_model_dir, data, tmp_path / "o", strict=False))
    assert not (tmp_path / "o" / "rejects.jsonl").exists()


def test_a_failed_prepare_leaves_no_partial_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmforge.errors import DataError

    data = tmp_path / "bad.jsonl"
    data.write_text('{"input": "x", "output": 5}\n' * 3 + "".join(json.dumps(r) + "\n" for r in qa_records(5)))
    with pytest.raises(DataError):
        prepare(_cfg(tiny_model_dir, data, tmp_path / "o"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no o/, no o.partial/
