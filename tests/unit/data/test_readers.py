"""Reading records: every file kind, bad bytes and lines as Problems, input expansion errors."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmforge.data.readers import RawRecord, expand_inputs, iter_records
from llmforge.errors import LlmforgeError, Problem

ROWS = [{"input": "hi", "output": "hello"}, {"input": "2+2?", "output": "4"}]


def _records(items: list[RawRecord | Problem]) -> list[RawRecord]:
    return [item for item in items if isinstance(item, RawRecord)]


def _problems(items: list[RawRecord | Problem]) -> list[Problem]:
    return [item for item in items if isinstance(item, Problem)]


def test_jsonl_lines_numbered_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    items = list(iter_records([str(path)]))
    assert items == [RawRecord(str(path), 1, ROWS[0]), RawRecord(str(path), 4, ROWS[1])]


def test_iter_records_is_a_lazy_iterator(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    records = iter_records([str(path)])
    assert isinstance(records, Iterator)
    assert next(records) == RawRecord(str(path), 1, ROWS[0])


def test_malformed_json_and_non_object_lines_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n{"input": "a",\n[1, 2]\n"text"\n', encoding="utf-8")
    items = list(iter_records([str(path)]))
    assert len(_records(items)) == 1
    malformed, array, string = _problems(items)
    assert (malformed.source, malformed.line) == (str(path), 2)
    assert "malformed JSON" in malformed.message and "Expecting property name" in malformed.message
    assert (array.line, string.line) == (3, 4)
    assert "expected a JSON object, got an array" in array.message
    assert "got a string" in string.message


def test_non_utf8_line_is_a_problem_with_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    good = b'{"text": "ok"}\n'
    path.write_bytes(good + b'{"text": "caf\xe9"}\n' + good)
    items = list(iter_records([str(path)]))
    assert [r.line for r in _records(items)] == [1, 3]
    (problem,) = _problems(items)
    assert problem.line == 2
    offset = len(b'{"text": "caf')  # 0-based offset of the bad byte within its line
    expected = f"not valid UTF-8 at byte {len(good) + offset} of the file (byte {offset} of this line)"
    assert problem.message == expected


def test_jsonl_gz_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in ROWS).encode())
    assert [r.data for r in _records(list(iter_records([str(path)])))] == ROWS


def test_json_array_and_object_with_one_list(tmp_path: Path) -> None:
    array, wrapped, single = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    array.write_text(json.dumps(ROWS + [3]), encoding="utf-8")
    wrapped.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    single.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}), encoding="utf-8")
    items = list(iter_records([str(array)]))
    assert [r.data for r in _records(items)] == ROWS
    assert "got a number" in _problems(items)[0].message
    assert [r.data for r in _records(list(iter_records([str(wrapped)])))] == ROWS
    assert [r.data for r in _records(list(iter_records([str(single)])))] == [json.loads(single.read_text())]


def test_json_records_carry_the_file_line_they_start_on(tmp_path: Path) -> None:
    # `file:line` must be where an editor jumps, not the record's index (issue #13.10).
    array, wrapped, single = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    array.write_text('[\n  {"input": "hi",\n   "output": "hello"},\n\n  {"input": "x",\n"output": "y"}, 3\n]\n')
    wrapped.write_text(json.dumps({"data": ROWS}, indent=2), encoding="utf-8")
    single.write_text('\n\n{"messages": []}\n')
    items = list(iter_records([str(array)]))
    assert [r.line for r in _records(items)] == [2, 5]
    (number,) = _problems(items)
    assert number.line == 6 and str(number).startswith(f"{array}:6:")
    assert [r.line for r in _records(list(iter_records([str(wrapped)])))] == [3, 7]  # lines of each "{"
    assert [r.line for r in _records(list(iter_records([str(single)])))] == [3]


def test_json_malformed_file_names_line(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n {"text": "a"},\n {"text": }\n]', encoding="utf-8")
    (problem,) = list(iter_records([str(path)]))
    assert isinstance(problem, Problem) and problem.line == 3 and "malformed JSON" in problem.message


def test_json_file_holding_jsonl_is_read_per_line(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    assert [(r.line, r.data) for r in _records(list(iter_records([str(path)])))] == [(1, ROWS[0]), (2, ROWS[1])]


def test_csv_rows_carry_their_file_line(tmp_path: Path) -> None:
    # The header is line 1 and a quoted value may span lines: the line is the file's, as an editor counts.
    path = tmp_path / "a.csv"
    path.write_bytes(b'input,output\nhi,hello\n"multi\nline",x\nonly-one-value\n\ncaf\xe9,y\n')
    items = list(iter_records([str(path)]))
    assert [(r.line, r.data) for r in _records(items)] == [
        (2, {"input": "hi", "output": "hello"}),
        (3, {"input": "multi\nline", "output": "x"}),
    ]
    short, latin = _problems(items)
    assert short.line == 5 and "1 values but the header has 2" in short.message
    assert (latin.line, latin.field) == (7, "input") and "not valid UTF-8 at byte 3" in latin.message


def test_csv_ragged_row_reported_at_its_file_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    lines = ["input,output"] + [f"q{i},a{i}" for i in range(2, 12)] + ["ragged,row,here"]  # the ragged row: line 12
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    (problem,) = _problems(list(iter_records([str(path)])))
    assert str(problem).startswith(f"{path}:12: row has 3 values")


def test_parquet_read_in_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}], "id": i} for i in range(2500)]
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    records = _records(list(iter_records([str(path)])))
    assert len(records) == 2500
    assert records[0] == RawRecord(str(path), 1, rows[0])
    assert records[-1].line == 2500 and records[-1].data == rows[-1]


def test_datasets_dir_and_dataset_dict_train_split(tmp_path: Path) -> None:
    import datasets

    train = datasets.Dataset.from_list(ROWS)
    test = datasets.Dataset.from_list([{"input": "t", "output": "u"}])
    train.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"test": test, "train": train}).save_to_disk(str(tmp_path / "dict"))
    single = _records(list(iter_records([str(tmp_path / "single")])))
    assert [(r.line, r.data) for r in single] == [(1, ROWS[0]), (2, ROWS[1])]
    assert expand_inputs([str(tmp_path / "dict")]) == [str(tmp_path / "dict" / "train")]
    assert [r.data for r in _records(list(iter_records([str(tmp_path / "dict")])))] == ROWS
    only_test = tmp_path / "only_test"
    datasets.DatasetDict({"test": test, "validation": test}).save_to_disk(str(only_test))
    with pytest.raises(LlmforgeError, match="no 'train' split"):
        expand_inputs([str(only_test)])


def test_glob_expands_sorted_and_sources_are_kept(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text(json.dumps({"text": name}) + "\n", encoding="utf-8")
    sources = expand_inputs([str(tmp_path / "*.jsonl")])
    assert sources == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert [r.data["text"] for r in _records(list(iter_records(sources)))] == ["a.jsonl", "b.jsonl"]


def test_bad_inputs_raise_naming_them(tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="matches no files"):
        iter_records([str(tmp_path / "*.jsonl")])
    with pytest.raises(LlmforgeError, match="missing.jsonl' does not exist"):
        iter_records([str(tmp_path / "missing.jsonl")])
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(LlmforgeError, match=r"notes.txt' has an unsupported extension; allowed: .jsonl"):
        expand_inputs([str(tmp_path / "notes.txt")])
    with pytest.raises(LlmforgeError, match="not one saved by `datasets`"):
        expand_inputs([str(tmp_path)])
    with pytest.raises(LlmforgeError, match="no input data"):
        expand_inputs([])


def test_unreadable_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LlmforgeError, match="broken.parquet: cannot be read"):
        list(iter_records([str(path)]))
