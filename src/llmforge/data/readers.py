"""Read input records one at a time from JSONL, JSON, CSV, Parquet files and `datasets` directories.

Nothing here knows about record formats: a reader yields each record as a plain dict with where it came from,
or a `Problem` when a line cannot be read at all, so that one bad line never hides the others.
JSONL and CSV are read line by line, Parquet by record batches and `datasets` directories by Arrow batches;
only a `.json` file (one array) is loaded whole.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmforge.errors import LlmforgeError, Problem

EXTENSIONS = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".parquet")
_DATASET_MARKERS = ("state.json", "dataset_info.json")
_BATCH_ROWS = 1024
# A `.json` object with one list value holds the records ({"data": [...]}), unless that key is itself a chat
# field: {"messages": [...]} alone is one chat record, not a list of records.
_CHAT_KEYS = ("messages", "conversations")


@dataclass(frozen=True)
class RawRecord:
    """One input record: the file it came from, where it is, and its fields.

    `line` is the 1-based line of the file on which the record starts (JSONL, JSON, CSV: what an editor shows,
    counting every physical line of quoted multi-line CSV values and of pretty-printed JSON), or the row
    number in a Parquet file or `datasets` directory, which have no lines.
    """

    source: str
    line: int
    data: dict[str, Any]


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Turn files, globs and `datasets` directories into the list of sources to read, in order.

    A glob expands to its sorted matches. A directory written by `Dataset.save_to_disk` is one source; one
    written by `DatasetDict.save_to_disk` stands for its "train" split (or its only split, if it has one);
    to read another split, pass `dir/<split>`.
    """
    if not inputs:
        raise LlmforgeError("no input data given; pass one or more files, globs or dataset directories")
    sources: list[str] = []
    for given in inputs:
        path = os.path.expanduser(given)
        if not os.path.exists(path) and any(c in path for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise LlmforgeError(f"input glob '{given}' matches no files")
            sources.extend(_resolve(match) for match in matches)
        elif not os.path.exists(path):
            raise LlmforgeError(f"input '{given}' does not exist")
        else:
            sources.append(_resolve(path))
    return sources


def _resolve(path: str) -> str:
    """Check one existing path: a supported file, or a `datasets` directory (a DatasetDict -> its split)."""
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, m)) for m in _DATASET_MARKERS):
            return path
        dict_file = os.path.join(path, "dataset_dict.json")
        if os.path.isfile(dict_file):
            return os.path.join(path, _pick_split(dict_file))
        raise LlmforgeError(
            f"input '{path}' is a directory but not one saved by `datasets` (no state.json, dataset_info.json "
            f"or dataset_dict.json); pass its files or a glob such as '{os.path.join(path, '*.jsonl')}'"
        )
    if _extension(path) is None:
        raise LlmforgeError(f"input '{path}' has an unsupported extension; allowed: {' '.join(EXTENSIONS)}")
    return path


def _pick_split(dict_file: str) -> str:
    try:
        with open(dict_file, encoding="utf-8") as f:
            splits = list(json.load(f)["splits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LlmforgeError(f"{dict_file}: cannot read the list of splits: {exc}") from exc
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return str(splits[0])
    folder = os.path.dirname(dict_file)
    raise LlmforgeError(
        f"dataset directory '{folder}' has no 'train' split (splits: {', '.join(map(str, splits))}); "
        f"pass the split to read, e.g. '{os.path.join(folder, str(splits[0]))}'"
    )


def _extension(path: str) -> str | None:
    lower = path.lower()
    return next((ext for ext in sorted(EXTENSIONS, key=len, reverse=True) if lower.endswith(ext)), None)


def iter_records(inputs: Sequence[str]) -> Iterator[RawRecord | Problem]:
    """Stream every record of every input, in order; a line that cannot be read is a `Problem`, not an error.

    Bad inputs (missing, unsupported) raise `LlmforgeError` here, before any record is read.
    """
    sources = expand_inputs(inputs)
    return _iter_sources(sources)


def _iter_sources(sources: list[str]) -> Iterator[RawRecord | Problem]:
    for source in sources:
        try:
            yield from _read_source(source)
        except (OSError, EOFError, ValueError, KeyError, csv.Error) as exc:  # a truncated .gz, a non-Parquet .parquet, ...
            raise LlmforgeError(f"{source}: cannot be read: {exc}") from exc


def _read_source(source: str) -> Iterator[RawRecord | Problem]:
    if os.path.isdir(source):
        return _read_dataset_dir(source)
    ext = _extension(source)
    if ext in (".jsonl", ".jsonl.gz"):
        return _read_jsonl(source)
    if ext in (".json", ".json.gz"):
        return _read_json(source)
    if ext == ".csv":
        return _read_csv(source)
    return _read_parquet(source)


def _open_binary(source: str) -> IO[bytes]:
    return gzip.open(source, "rb") if source.lower().endswith(".gz") else open(source, "rb")  # noqa: SIM115


def _read_jsonl(source: str) -> Iterator[RawRecord | Problem]:
    with _open_binary(source) as f:
        yield from _parse_json_lines(source, f)


def _parse_json_lines(source: str, lines: Iterable[bytes]) -> Iterator[RawRecord | Problem]:
    offset = 0
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw)
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw, start = raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Problem(source, number, None, _utf8_message(start + exc.start, exc.start))
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Problem(source, number, None, f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        yield _as_record(source, number, value)


def _utf8_message(file_offset: int, line_offset: int) -> str:
    return f"not valid UTF-8 at byte {file_offset} of the file (byte {line_offset} of this line)"


def _as_record(source: str, line: int, value: Any) -> RawRecord | Problem:
    if isinstance(value, dict):
        return RawRecord(source, line, value)
    return Problem(source, line, None, f"expected a JSON object, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _read_json(source: str) -> Iterator[RawRecord | Problem]:
    with _open_binary(source) as f:
        raw = f.read()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        yield Problem(source, line, None, f"not valid UTF-8 at byte {exc.start}; the file cannot be read")
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line: JSONL with a .json name
            yield from _parse_json_lines(source, raw.splitlines(keepends=True))
        else:
            yield Problem(source, exc.lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})")
        return
    items = _json_items(value)
    wrapped = isinstance(value, dict) and items is next(iter(value.values()), None)
    for item, line in zip(items, _json_item_lines(text, len(items), wrapped)):
        yield _as_record(source, line, item)


def _json_item_lines(text: str, count: int, wrapped: bool) -> list[int]:
    """The 1-based line on which each record of a whole, valid `.json` file starts: where its array element,
    or the one object that is the whole file, begins."""
    decoder = json.JSONDecoder()
    ws = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
    pos = ws(text, 0).end()
    if wrapped:  # {"key": [...]}: step over `{`, the key and `:` to the array
        _, pos = decoder.raw_decode(text, ws(text, pos + 1).end())
        pos = ws(text, ws(text, pos).end() + 1).end()
    if not text.startswith("[", pos):  # the file is one record
        return [text.count("\n", 0, pos) + 1]
    starts = []
    pos = ws(text, pos + 1).end()
    for _ in range(count):
        starts.append(pos)
        _, pos = decoder.raw_decode(text, pos)
        pos = ws(text, ws(text, pos).end() + 1).end()  # over the comma
    lines, line, last = [], 1, 0
    for start in starts:  # count newlines incrementally: linear in the file, not in records x file
        line += text.count("\n", last, start)
        lines.append(line)
        last = start
    return lines


def _json_items(value: Any) -> list[Any]:
    """The records of a whole `.json` file: an array, {"key": [...]}, or else the one object itself."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and len(value) == 1:
        key, inner = next(iter(value.items()))
        if isinstance(inner, list) and key not in _CHAT_KEYS:
            return inner
    return [value]


def _read_csv(source: str) -> Iterator[RawRecord | Problem]:
    # The default 128 kB cap per value rejects long documents; the limit is process-wide and only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    # Decode with surrogateescape so one bad byte spoils only its row, reported with its column.
    # `line_num` counts physical lines read, so a row starts one line after the previous row ended, however
    # many lines its quoted values span: that is the line an editor jumps to.
    with open(source, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            return
        ended = rows.line_num
        for row in rows:
            start, ended = ended + 1, rows.line_num
            if not row:
                continue
            yield _csv_record(source, start, header, row)


def _csv_record(source: str, number: int, header: list[str], row: list[str]) -> RawRecord | Problem:
    if len(row) != len(header):
        return Problem(source, number, None, f"row has {len(row)} values but the header has {len(header)} columns")
    for column, value in zip(header, row):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            offset = len(value[: exc.start].encode("utf-8", "surrogateescape"))
            return Problem(source, number, column, f"not valid UTF-8 at byte {offset} of this value")
    return RawRecord(source, number, dict(zip(header, row)))


def _read_parquet(source: str) -> Iterator[RawRecord | Problem]:
    import pyarrow.parquet as pq

    number = 0
    with pq.ParquetFile(source) as parquet:
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield RawRecord(source, number, row)


def _read_dataset_dir(source: str) -> Iterator[RawRecord | Problem]:
    import pyarrow as pa

    number = 0
    for arrow_file in _arrow_files(source):
        with pa.memory_map(str(arrow_file)) as stream:
            for batch in pa.ipc.open_stream(stream):
                for row in batch.to_pylist():
                    number += 1
                    yield RawRecord(source, number, row)


def _arrow_files(folder: str) -> list[Path]:
    """The Arrow shards of a `save_to_disk` directory, in the order its state.json lists them."""
    state = Path(folder, "state.json")
    if state.is_file():
        with state.open(encoding="utf-8") as f:
            return [Path(folder, entry["filename"]) for entry in json.load(f)["_data_files"]]
    return sorted(Path(folder).glob("data-*.arrow"))
