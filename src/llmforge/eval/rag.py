"""`eval --rag INDEX`: retrieval hit rate@k and MRR@k, and answer quality with and without the retrieved passages.

The questions: a user's QA JSONL ({"question", "answer", optional "source"}), or, by default, questions derived
offline from the docstrings of the index's own Python source files ("What does `json.decoder.py_scanstring` do?",
answered by the first sentence of its docstring, `source` the file it is in), drawn with a fixed seed.

Answers are generated with the passages put into the chat exactly as `serve --rag` does (`rag.with_passages`), and
once without them, so the gain from retrieval shows. Scored by `answer_recall` (the share of the reference's key
words, lower-cased words of 4+ letters, that the answer contains) and ROUGE-L against the reference.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from llmforge.data.sources import docstring_function_records, module_name
from llmforge.errors import ConfigError
from llmforge.jsonl import read_objects
from llmforge.metrics.generate import Decoding, generate_batch
from llmforge.metrics.text import rouge
from llmforge.models.chat import with_system_folded
from llmforge.rag import RagIndex, load_index, with_passages
from llmforge.rag.quality import RetrievalCase, retrieval_quality

MAX_NEW_TOKENS = 48
_WORD = re.compile(r"[a-z0-9_]{4,}")


def first_sentence(docstring: str) -> str:
    """The docstring's first sentence, on one line: up to the first '. ' or blank line."""
    para = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    match = re.search(r"\.(\s|$)", para)
    return para[: match.start() + 1] if match else para


def docstring_qa(files: list[Path], n: int = 32, seed: int = 0) -> list[dict[str, str]]:
    """Up to `n` questions about the documented functions in `files`, drawn with `seed`: question, answer (the
    first sentence of the docstring), source (the file's path as given)."""
    pool = []
    for path in sorted(files):
        for r in docstring_function_records([path]):
            docstring = r["input"].split("\n\n", 1)[1]  # the record's prompt is the signature, a blank line, the doc
            answer = first_sentence(docstring)
            if len(_WORD.findall(answer.lower())) >= 2:
                qualified = f"{module_name(path)}.{r['name']}"
                pool.append({"question": f"What does `{qualified}` do?", "answer": answer, "source": str(path)})
    return random.Random(seed).sample(pool, min(n, len(pool)))


def read_qa(path: Path) -> list[dict[str, str]]:
    """A user's QA set: one JSON object a line with string fields question, answer and (optional) source."""
    cases = []
    for line_no, record in read_objects(path, "the QA set"):
        for field in ("question", "answer"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise ConfigError(f"{path}, line {line_no}: field '{field}' must be a non-empty string")
        cases.append({k: str(record[k]) for k in ("question", "answer", "source") if record.get(k)})
    if not cases:
        raise ConfigError(f"{path}: no questions")
    return cases


def answer_recall(prediction: str, reference: str) -> float:
    """The share of the reference's key words (lower-cased, 4+ letters) that the prediction contains."""
    keys = set(_WORD.findall(reference.lower()))
    said = set(_WORD.findall(prediction.lower()))
    return len(keys & said) / len(keys) if keys else 0.0


def _answers(runtime: Any, tokenizer: Any, chats: list[list[dict[str, Any]]], batch_size: int) -> list[str]:
    def ids(turns: list[dict[str, Any]]) -> list[int]:  # as serve's chat_ids: template, folded if refused
        text, _ = with_system_folded(
            lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True), turns)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompts = [ids(c) for c in chats]
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = generate_batch(runtime, tokenizer, prompts[start : start + batch_size], Decoding(MAX_NEW_TOKENS))
        out += [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    return out


def _scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    recall = sum(answer_recall(p, r) for p, r in zip(predictions, references)) / len(references)
    return {"answer_recall": recall, "rougeL": rouge(predictions, references)["rougeL"]}


def rag_metrics(runtime: Any, tokenizer: Any, index: RagIndex, cases: list[dict[str, str]], k: int = 4,
                batch_size: int = 8) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-question records): retrieval quality over the cases with a source, answers with and
    without the top-k passages."""
    with_source = [RetrievalCase(c["question"], c["source"]) for c in cases if c.get("source")]
    metrics: dict[str, Any] = {"questions": len(cases), "top_k": k}
    if with_source:
        quality = retrieval_quality(index, with_source, k)
        metrics.update(quality, retrieval_questions=quality.pop("questions"))
    turns = [[{"role": "user", "content": c["question"]}] for c in cases]
    hits = [index.search(c["question"], k) for c in cases]
    plain = _answers(runtime, tokenizer, turns, batch_size)
    rag = _answers(runtime, tokenizer, [with_passages(t, h) for t, h in zip(turns, hits)], batch_size)
    references = [c["answer"] for c in cases]
    metrics["with_rag"] = _scores(rag, references)
    metrics["without_rag"] = _scores(plain, references)
    records = [{**c, "sources": [h.source for h in hs], "answer_with_rag": a, "answer_without_rag": p}
               for c, hs, a, p in zip(cases, hits, rag, plain)]
    return metrics, records


def index_python_files(index: RagIndex) -> list[Path]:
    return sorted({Path(c["source"]) for c in index.chunks if c["source"].endswith(".py")})


def evaluate_rag(runtime: Any, tokenizer: Any, index_dir: Path, qa: Path | None, questions: int, k: int,
                 batch_size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load the index, take the QA set (`qa`, else derived from the index's Python files) and score it."""
    index = load_index(index_dir)
    if qa is not None:
        cases = read_qa(qa)[:questions]
    else:
        cases = docstring_qa(index_python_files(index), questions)
        if not cases:
            raise ConfigError(f"eval --rag: {index_dir} indexes no documented Python functions to derive questions "
                              "from; pass a QA file (eval.rag_qa: JSONL with question, answer, source)")
    metrics, records = rag_metrics(runtime, tokenizer, index, cases, k, batch_size)
    return {"index": str(index_dir), "qa": str(qa) if qa else "docstrings", **metrics}, records
