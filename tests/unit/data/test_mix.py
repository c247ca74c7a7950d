"""Old plus new prepared data (`llmforge retrain`'s training set): a seeded share of the old training records,
every new record, every held-out record of both."""

from __future__ import annotations

from pathlib import Path

from llmforge.artifacts import read_manifest
from llmforge.data.mix import mix_prepared
from llmforge.data.splits import load_split
from llmforge.registry.integrity import check_files


def _rows(prepared: Path, split: str) -> list[tuple[int, ...]]:
    return [tuple(ids) for ids in load_split(prepared, split)["input_ids"]]


def test_mix_keeps_a_seeded_share_of_old_training_records_and_all_held_out(prepared: Path, tmp_path: Path) -> None:
    old_train = _rows(prepared, "train")
    mixed = mix_prepared(prepared, prepared, tmp_path / "mix", old_fraction=0.25, seed=3)
    keep = round(len(old_train) * 0.25)
    assert mixed.metrics["old_train_kept"] == keep and mixed.metrics["old_train_records"] == len(old_train)
    train = _rows(mixed.output_dir, "train")
    assert len(train) == keep + len(old_train)
    assert set(train[:keep]) <= set(old_train) and train[keep:] == old_train  # the sample, then every new record
    for split in ("validation", "test"):  # both held-out sets, whole, shuffled together
        assert sorted(_rows(mixed.output_dir, split)) == sorted(_rows(prepared, split) * 2)
    test = _rows(mixed.output_dir, "test")
    assert test != _rows(prepared, "test") * 2  # not old-then-new: the first N hold both
    manifest = read_manifest(mixed.output_dir)
    assert manifest["kind"] == "prepared-dataset"
    assert [p["path"] for p in manifest["parents"]] == [str(prepared.resolve())] * 2
    again = mix_prepared(prepared, prepared, tmp_path / "again", old_fraction=0.25, seed=3)
    assert _rows(again.output_dir, "train") == train  # the same seed, the same sample
    assert read_manifest(again.output_dir)["dataset_fingerprint"] == manifest["dataset_fingerprint"]
    assert check_files(prepared, read_manifest(prepared)["files"]).ok  # the inputs are read, never written to
    counted = mix_prepared(prepared, prepared, tmp_path / "counted", old_records=5)
    assert counted.metrics["old_train_kept"] == 5 and len(_rows(counted.output_dir, "train")) == 5 + len(old_train)
