"""`llmforge prepare`: read records, validate, dedupe, split, render, label, tokenize, save, report.

The output is one `datasets` directory per split (`input_ids`, `labels`, `attention_mask`), a lint report, and
a manifest whose dataset fingerprint covers the inputs, the tokenizer and the options: preparing again with
the same fingerprint returns the cached run at once. Records stream through: samples are written to Arrow shards
batch by batch, and the dedupe set holds 8 bytes per record, so memory stays flat as the dataset grows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from jinja2 import TemplateError

from llmforge import __version__
from llmforge.artifacts import RunDir, StageResult, is_run_dir, read_manifest, sha256_file
from llmforge.data.config import DataConfig
from llmforge.data.formats import Example, apply_columns, detect_dataset_format, normalize
from llmforge.data.readers import RawRecord, expand_inputs, iter_records
from llmforge.data.report import LengthStats, lint_report, save_length_histogram
from llmforge.data.shards import SeenSet, SplitShards
from llmforge.data.splits import SplitPlan, plan_splits, unit_hash
from llmforge.data.tokenize import (
    ChatRenderer,
    RecordError,
    Rendered,
    Tokenized,
    fit_length,
    render_chat,
    render_text,
    tokenize_batch,
)
from llmforge.errors import DataError, LlmforgeError, Problem
from llmforge.models.chat import ensure_chat_template, with_system_folded
from llmforge.models.loader import load_tokenizer, model_context
from llmforge.prepare.config import PrepareConfig
from llmforge.progress import Hooks, begin

SPLITS = ("train", "validation", "test")
DETECT_SAMPLE = 100
BATCH = 512

Progress = Callable[[int], None]

CHAT_TEMPLATE = "chat_template.jinja"  # in a prepared run: the template its chats were rendered with

log = logging.getLogger(__name__)


@dataclass
class _State:
    problems: list[Problem] = field(default_factory=list)  # the first 1,000: enough for the strict-mode error
    problem_count: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    read: int = 0
    system_folded: int = 0  # chats whose template has no system role: folded into the first user turn
    rejects: IO[str] | None = None  # when not strict, every problem is written here (rejects.jsonl) as found

    def add(self, problems: list[Problem]) -> None:
        self.problem_count += len(problems)
        self.problems.extend(problems[: max(0, 1000 - len(self.problems))])
        if self.rejects is not None:
            self.rejects.writelines(json.dumps({"source": p.source, "line": p.line, "field": p.field,
                                                "message": p.message}) + "\n" for p in problems)


def _file_digest(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return hashlib.sha256("".join(sha256_file(f) for f in sorted(p.rglob("*")) if f.is_file()).encode()).hexdigest()
    return sha256_file(p)


def fingerprint(cfg: PrepareConfig, tokenizer: Any, files: list[str],
                split_files: dict[str, list[str]] | None = None) -> str:
    """Covers input bytes (and which split each file feeds), the tokenizer (vocab, merges, template) and every
    option that changes output."""
    h = hashlib.sha256(f"llmforge {__version__}\n".encode())
    for f in files:
        h.update(f"{Path(f).name}:{_file_digest(f)}\n".encode())
    for split, split_inputs in (split_files or {}).items():
        for f in split_inputs:
            h.update(f"{split}={Path(f).name}:{_file_digest(f)}\n".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer)).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    options = cfg.data.model_dump(mode="json", exclude={"path", "validation_path", "test_path"})
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()


def split_of(ex: Example, key: str, data: DataConfig, plan: SplitPlan | None = None) -> str | None:
    """The record's split: named by `split.column`, else a seeded hash of its group (or content), cut at
    exact sizes by `plan` (see llmforge.data.splits) or, without one, at the fractions themselves.

    A split that has its own files (data.validation_path, data.test_path) takes no share of data.path.
    """
    if data.split.column:
        return ex.group if ex.group in SPLITS else None
    if ex.group is not None:
        key = ex.group
    test = 0.0 if data.test_path else data.split.test
    validation = 0.0 if data.validation_path else data.split.validation
    u = unit_hash(data.split.seed, key)
    if plan is not None:
        return plan.split(u)
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def _plan(cfg: DataConfig, files: list[str], split_files: dict[str, list[str]],
          progress: Progress | None) -> tuple[SplitPlan | None, int | None]:
    """A first, cheap pass (read and validate; no tokenizing): the exact split sizes, and how many records."""
    if cfg.split.column:  # the data names each split: nothing to size
        return None, None
    begin(progress, "reading records (exact split sizes)", None)
    us, count = array("d"), 0  # 8 bytes per record; a list of floats would hold 32
    for fixed, ex in _labelled(cfg, files, split_files, _State()):
        count += 1
        if fixed is None:
            us.append(unit_hash(cfg.split.seed, ex.group if ex.group is not None else _content_key(ex)))
        if progress and count % BATCH == 0:
            progress(BATCH)
    if progress:
        progress(count % BATCH)
    test = 0.0 if cfg.test_path else cfg.split.test
    validation = 0.0 if cfg.validation_path else cfg.split.validation
    return plan_splits(np.frombuffer(us, dtype=np.float64), test, validation), count


def split_sources(data: DataConfig, split_files: dict[str, list[str]]) -> dict[str, str]:
    """Where each split's records come from, for the lint report."""
    sources = {"train": "data.path"}
    for split in ("validation", "test"):
        if split in split_files:
            sources[split] = (f"data.{split}_path ({', '.join(split_files[split])}); "
                              f"data.split.{split} not applied")
        elif data.split.column:
            sources[split] = f"data.path, column {data.split.column!r}"
        else:
            sources[split] = (f"data.path, data.split.{split}={getattr(data.split, split)}: exactly that share of "
                              "its distinct records (groups), rounded half up, chosen by a seeded hash")
    return sources


def _content_key(ex: Example) -> str:
    # tool calls and tools join the key only where a record has them: other records keep their keys (and splits)
    msgs = [[m.role, m.content] + ([[[c.id, c.name, c.arguments] for c in m.tool_calls], m.tool_call_id]
                                   if m.tool_calls or m.tool_call_id else []) for m in ex.messages]
    body = json.dumps([ex.kind, msgs, ex.text, ex.chosen, ex.rejected] + ([list(ex.tools)] if ex.tools else []),
                      ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _examples(cfg: DataConfig, files: list[str], state: _State, key: str = "data.path") -> Iterator[Example]:
    """The records of one group of files, the format detected (when 'auto') from the group's first records."""
    records = iter_records(files)
    head: list[RawRecord | Problem] = []
    for item in records:
        head.append(item)
        if sum(isinstance(h, RawRecord) for h in head) >= DETECT_SAMPLE:
            break
    fmt = cfg.format
    if fmt == "auto":
        sample = [h.data for h in head if isinstance(h, RawRecord)]
        if not sample:
            raise DataError([h for h in head if isinstance(h, Problem)] or
                            [Problem(", ".join(files), None, None, f"no records found (given as {key})")])
        try:
            fmt = detect_dataset_format([apply_columns(d, cfg.columns) for d in sample])
        except LlmforgeError as exc:
            raise LlmforgeError(f"{', '.join(files)} (given as {key}): {exc}") from exc
    for item in itertools.chain(head, records):
        if isinstance(item, Problem):
            state.read += 1
            state.add([item])
            continue
        state.read += 1
        result = normalize(item, fmt, cfg.columns, cfg.split.group_by or cfg.split.column)
        if isinstance(result, list):
            state.add(result)
        else:
            yield result


def _labelled(cfg: DataConfig, files: list[str], split_files: dict[str, list[str]],
              state: _State) -> Iterator[tuple[str | None, Example]]:
    """(fixed split or None, example) for every record: held-out files first, so that a record both in a held-out
    file and in data.path is kept in the held-out split and dropped from training as a duplicate."""
    for split in ("test", "validation"):
        if split in split_files:
            yield from ((split, ex) for ex in _examples(cfg, split_files[split], state, f"data.{split}_path"))
    yield from ((None, ex) for ex in _examples(cfg, files, state))


def _unique(items: Iterator[tuple[str | None, Example]], seen: SeenSet | None,
            state: _State) -> Iterator[tuple[str | None, Example, str]]:
    """(split, example, content key) of records not seen before, in order, checked a batch at a time."""
    while batch := list(itertools.islice(items, BATCH)):
        keys = [_content_key(ex) for _, ex in batch]
        fresh = seen.first_seen([bytes.fromhex(k[:16]) for k in keys]) if seen is not None else [True] * len(batch)
        for (split, ex), key, new in zip(batch, keys, fresh):
            if new:
                yield split, ex, key
            else:
                state.dropped["duplicate"] += 1


def _render(tokenizer: Any, ex: Example, cfg: DataConfig, renderer: ChatRenderer) -> tuple[Rendered, bool]:
    """The rendered sample, and whether its system message had to be folded into the first user turn."""
    if ex.kind == "text":
        return render_text(ex.text), False
    return with_system_folded(lambda m: render_chat(tokenizer, m, cfg.train_on_inputs, renderer, ex.template_tools()),
                              ex.turns())


class _SplitWriter:
    """Applies the length and zero-label policies and streams kept samples to each split's Arrow shards.

    Holds at most BATCH rows per split in memory; the lengths are kept as counts (LengthStats).
    """

    def __init__(self, cfg: DataConfig, state: _State, folder: Callable[[str], Path]) -> None:
        self.cfg, self.state, self.folder = cfg, state, folder
        self.kind: str | None = None  # "samples" or "pairs", set by the first row written
        self.rows: dict[str, list[tuple[Any, ...]]] = {s: [] for s in SPLITS}
        self.shards: dict[str, SplitShards] = {}
        self.samples: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.lengths = LengthStats()
        self.truncated = 0
        self.chunked = 0

    def add_preference(self, split: str, ex: Example, tokenizer: Any, render: ChatRenderer) -> None:
        """Kept as text in TRL's preference format: the prompt rendered up to the assistant's turn."""
        messages = [{"role": m.role, "content": m.content} for m in ex.messages]
        self._append("pairs", split, (render(messages, add_generation_prompt=True),
                                      ex.chosen + (tokenizer.eos_token or ""),
                                      ex.rejected + (tokenizer.eos_token or "")))

    def add(self, split: str, ex: Example, sample: Tokenized) -> None:
        cfg = self.cfg
        if len(sample.input_ids) > cfg.max_length:
            if cfg.overlong == "error":
                self.state.add([Problem(ex.source, ex.line, None,
                                        f"{len(sample.input_ids)} tokens > data.max_length={cfg.max_length}")])
                return
            if cfg.overlong == "chunk" and ex.kind != "text":
                raise LlmforgeError("data.overlong='chunk' applies to plain text only; use drop or truncate")
            pieces = fit_length(sample, cfg.max_length, cfg.overlong)
            if not pieces:
                self.state.dropped["too_long"] += 1
                return
            self.truncated += cfg.overlong == "truncate"
            self.chunked += cfg.overlong == "chunk"
        else:
            pieces = [sample]
        for piece in pieces:
            trainable = piece.trainable
            if trainable == 0:
                if cfg.overlong == "truncate" and len(sample.input_ids) > cfg.max_length:
                    self.state.dropped["no_trainable_tokens_after_truncation"] += 1
                elif cfg.strict:
                    self.state.add([Problem(ex.source, ex.line, None, "has zero trainable tokens")])
                else:
                    self.state.dropped["zero_trainable_tokens"] += 1
                continue
            self.lengths.add(len(piece.input_ids), trainable)
            self._append("samples", split, (np.asarray(piece.input_ids, dtype=np.int32),
                                            np.asarray(piece.labels, dtype=np.int32)))

    def _append(self, kind: str, split: str, row: tuple[Any, ...]) -> None:
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise LlmforgeError("the data mixes preference pairs with chat or text records; prepare them separately")
        self.samples[split] += 1
        self.rows[split].append(row)
        if len(self.rows[split]) >= BATCH:
            self._write(split)

    def _write(self, split: str) -> None:
        rows, self.rows[split] = self.rows[split], []
        if split not in self.shards:
            self.shards[split] = SplitShards(self.folder(split), _features(self.kind))
        self.shards[split].write(_pairs_table(rows) if self.kind == "pairs" else _arrow_table(rows))

    def close(self) -> None:
        """Write what is left and each split's state files; a split with no rows is saved empty."""
        for split in SPLITS:
            if self.rows[split]:
                self._write(split)
            self.shards.setdefault(split, SplitShards(self.folder(split), _features(self.kind or "samples")))
            self.shards[split].close()


def _features(kind: str) -> Any:
    from datasets import Features, List, Value

    if kind == "pairs":
        return Features({k: Value("string") for k in ("prompt", "chosen", "rejected")})
    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                     "attention_mask": List(Value("int8"))})


def _arrow_table(rows: list[tuple[np.ndarray, np.ndarray]]) -> Any:
    """List columns built from one flat buffer and offsets: far faster than converting row by row."""
    import pyarrow as pa

    lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.int32, count=len(rows))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))

    def column(flat: np.ndarray) -> Any:
        return pa.ListArray.from_arrays(offsets, pa.array(flat))

    input_ids = np.concatenate([ids for ids, _ in rows])
    labels = np.concatenate([lab for _, lab in rows])
    return pa.table({"input_ids": column(input_ids), "labels": column(labels),
                     "attention_mask": column(np.ones(len(input_ids), dtype=np.int8))})


def _pairs_table(rows: list[tuple[str, str, str]]) -> Any:
    import pyarrow as pa

    return pa.table({name: pa.array([row[i] for row in rows], type=pa.string())
                     for i, name in enumerate(("prompt", "chosen", "rejected"))})


def _finish_problems(state: _State, cfg: DataConfig, run: RunDir) -> None:
    if state.rejects is not None:
        state.rejects.close()
        state.rejects = None
        if not state.problem_count:
            run.file("rejects.jsonl").unlink()
    if not state.problem_count:
        return
    if cfg.strict:
        raise DataError(state.problems, state.problem_count,
                        hint="Fix these records, or set data.strict=false to skip them into rejects.jsonl.")
    state.dropped["invalid_record"] += state.problem_count


def _inputs(cfg: DataConfig) -> tuple[list[str], dict[str, list[str]]]:
    """data.path's sources, and those of each split given its own files; errors name the config key."""
    if not cfg.path:
        raise LlmforgeError("no input data: pass --data FILE or set data.path in the config")
    files = expand_inputs(cfg.path)
    split_files = {}
    for split, paths in cfg.split_files().items():
        try:
            split_files[split] = expand_inputs(paths)
        except LlmforgeError as exc:
            raise LlmforgeError(f"data.{split}_path: {exc}") from exc
    return files, split_files


def prepare(cfg: PrepareConfig, hooks: Hooks | None = None) -> StageResult:
    """Read, check, split, render and tokenize `cfg.data`; the run's metrics are the lint report. An identical
    finished run (same dataset fingerprint) is returned as it is (`cached`)."""
    with (hooks or Hooks()).progress("preparing") as progress:
        return _prepare(cfg, progress)


def _prepare(cfg: PrepareConfig, progress: Progress | None) -> StageResult:
    files, split_files = _inputs(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    tokenizer.model_max_length = sys.maxsize  # lengths are this module's job (data.overlong), not a warning's
    asked, cfg = cfg.data.max_length, _within_context(cfg)
    if cfg.data.chat_template or cfg.data.format not in ("text", "auto"):
        ensure_chat_template(tokenizer, cfg.data.chat_template)  # fail before reading any data
    fp = fingerprint(cfg, tokenizer, files, split_files)
    if is_run_dir(cfg.output_dir) and read_manifest(cfg.output_dir).get("dataset_fingerprint") == fp:
        report = json.loads((cfg.output_dir / "metrics.json").read_text())
        return StageResult(cfg.output_dir, report, cached=True)

    plan, total = _plan(cfg.data, files, split_files, progress)
    begin(progress, "preparing (render, tokenize, write)", total)
    state = _State()
    with RunDir(cfg.output_dir, kind="prepared-dataset", command="prepare", config=cfg,
                dataset_fingerprint=fp) as run:
        writer = _SplitWriter(cfg.data, state, lambda split: run.file(split))
        if not cfg.data.strict:
            state.rejects = run.file("rejects.jsonl").open("w", encoding="utf-8")
        seen = SeenSet() if cfg.data.dedupe else None
        kinds = _stream(cfg.data, tokenizer, _unique(_labelled(cfg.data, files, split_files, state), seen, state),
                        writer, progress, plan)
        _finish_problems(state, cfg.data, run)
        report = lint_report(writer.lengths, writer.samples, state.read, state.dropped, kinds,
                             truncated=writer.truncated, chunked=writer.chunked, max_length=cfg.data.max_length,
                             overlong=cfg.data.overlong, split_sources=split_sources(cfg.data, split_files))
        report["system_folded"] = state.system_folded  # the template has no system role (Gemma 2, Mistral v0.1)
        if cfg.data.max_length < asked:
            report["max_length_note"] = (f"data.max_length {asked} is beyond the model's context: samples were held "
                                         f"to its {cfg.data.max_length} positions (data.overlong={cfg.data.overlong})")
        if report["records_kept"] == 0:
            named = files + [f for group in split_files.values() for f in group]
            held = (f" (data.max_length {asked} was held to the model's context, {cfg.data.max_length} tokens)"
                    if cfg.data.max_length < asked else "")
            raise LlmforgeError(f"no usable records in {', '.join(named)}: dropped {dict(state.dropped)}{held}")
        writer.close()
        (run.file("lint.json")).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        save_length_histogram(writer.lengths, run.file("lengths.png"))
        run.extra = {"inputs": [str(Path(f).resolve()) for f in files], "tokenizer": cfg.model.name_or_path}
        if tokenizer.chat_template:  # the template the data was rendered with travels to training, then serving
            run.file(CHAT_TEMPLATE).write_text(tokenizer.chat_template, encoding="utf-8")
            run.extra["chat_template"] = CHAT_TEMPLATE
        if split_files:
            run.extra["split_inputs"] = {split: [str(Path(f).resolve()) for f in group]
                                         for split, group in split_files.items()}
        run.finish(report)
    return StageResult(cfg.output_dir, report)


def _within_context(cfg: PrepareConfig) -> PrepareConfig:
    """`cfg` with data.max_length held to the model's context length (its config's max_position_embeddings or
    n_positions), so that no sample is longer than the model takes: past it, learned positions (GPT-2) fail at
    training time and rotary ones were never trained there, and serving refuses such prompts."""
    context = model_context(cfg.model)
    if context is None or cfg.data.max_length <= context:
        return cfg
    log.warning("data.max_length %d is beyond %s's context length %d: samples are held to %d tokens",
                cfg.data.max_length, cfg.model.name_or_path, context, context)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": context})})


def _stream(cfg: DataConfig, tokenizer: Any, examples: Iterator[tuple[str | None, Example, str]],
            writer: _SplitWriter, progress: Progress | None, plan: SplitPlan | None = None) -> Counter[str]:
    """Split, render and tokenize a batch at a time into the writer; returns the count of each record kind."""
    split_counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    renderer = ChatRenderer(tokenizer) if tokenizer.chat_template else None
    batch: list[tuple[str, Example]] = []

    def flush() -> None:
        rendered, kept = [], []
        for split, ex in batch:
            try:
                sample, folded = _render(tokenizer, ex, cfg, renderer)
                rendered.append(sample)
                kept.append((split, ex))
                writer.state.system_folded += folded
            except RecordError as exc:  # the template cannot show part of it (its tools, its calls)
                writer.state.add([Problem(ex.source, ex.line, exc.field, str(exc))])
            except (LlmforgeError, TemplateError) as exc:  # this record, not the run: named, like any bad record
                writer.state.add([Problem(ex.source, ex.line, "messages", f"the chat template cannot render it: "
                                          f"{exc}")])
        for (split, ex), sample in zip(kept, tokenize_batch(tokenizer, rendered)):
            writer.add(split, ex, sample)
        if progress:
            progress(len(batch))
        batch.clear()

    for fixed, ex, key in examples:
        split = fixed or split_of(ex, key, cfg, plan)
        if split is None:
            writer.state.add([Problem(ex.source, ex.line, cfg.split.column,
                                      f"split is {ex.group!r}; allowed: {', '.join(SPLITS)}")])
            continue
        if cfg.max_records and split_counts[split] >= cfg.max_records:
            writer.state.dropped[f"over_max_records_{split}"] += 1
            continue
        split_counts[split] += 1
        kinds[ex.kind] += 1
        if ex.kind == "preference":
            writer.add_preference(split, ex, tokenizer, renderer or ChatRenderer(tokenizer))
            continue
        batch.append((split, ex))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return kinds
