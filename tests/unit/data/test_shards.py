from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa

from llmforge.data.report import LengthStats
from llmforge.data.shards import SeenSet, SplitShards


def _features():
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "name": Value("string")})


def test_split_shards_load_like_save_to_disk_in_order(tmp_path: Path) -> None:
    from datasets import load_from_disk

    shards = SplitShards(tmp_path / "train", _features(), max_shard_bytes=1)  # a new shard for every batch
    batches = [[[1, 2], [3]], [[4, 5, 6]], [[7], [8], [9, 10]]]
    for b, rows in enumerate(batches):
        shards.write(pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.int32())),
                               "name": [f"{b}-{i}" for i in range(len(rows))]}))
    shards.close()
    files = sorted(p.name for p in (tmp_path / "train").glob("*.arrow"))
    assert files == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    loaded = load_from_disk(str(tmp_path / "train"))
    assert loaded["input_ids"] == [row for rows in batches for row in rows]
    assert loaded["name"] == ["0-0", "0-1", "1-0", "2-0", "2-1", "2-2"]
    assert loaded.features == _features()


def test_empty_split_is_saved_as_datasets_saves_one(tmp_path: Path) -> None:
    from datasets import Dataset

    SplitShards(tmp_path / "mine", _features()).close()
    Dataset.from_dict({"input_ids": [], "name": []}, features=_features()).save_to_disk(str(tmp_path / "theirs"))
    state = json.loads((tmp_path / "mine" / "state.json").read_text())
    expected = json.loads((tmp_path / "theirs" / "state.json").read_text())
    assert state.keys() == expected.keys() and state["_data_files"] == expected["_data_files"] == []
    assert json.loads((tmp_path / "mine" / "dataset_info.json").read_text()) == \
        json.loads((tmp_path / "theirs" / "dataset_info.json").read_text())


def test_seen_set_matches_a_python_set() -> None:
    rng = random.Random(0)
    pool = [rng.randbytes(8) for _ in range(3000)]
    seen, reference = SeenSet(), set()
    for _ in range(40):  # batches with repeats inside a batch and across batches
        batch = [rng.choice(pool) for _ in range(rng.randint(0, 300))]
        expected = []
        for key in batch:
            expected.append(key not in reference)
            reference.add(key)
        assert seen.first_seen(batch) == expected
    assert len(seen) == len(reference)
    runs = [len(r) for r in seen.runs]
    assert all(a > 2 * b for a, b in zip(runs, runs[1:]))  # log-structured: few runs
    assert all(np.all(r[1:] > r[:-1]) for r in seen.runs)  # each run sorted, no repeats


def test_length_stats_match_numpy_percentiles() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        lengths = rng.integers(1, 300, size=n)
        stats = LengthStats()
        for length in lengths:
            stats.add(int(length), trainable=1)
        got = stats.percentiles()
        assert got["min"] == lengths.min() and got["max"] == lengths.max() and got["mean"] == lengths.mean()
        for q in (50, 90, 99):
            assert got[f"p{q}"] == float(np.percentile(lengths, q))
        assert stats.total == lengths.sum() and stats.samples == n and stats.trainable == n
    assert LengthStats().percentiles() == {}
