"""Retrieval quality on held-out questions: hit rate@k and MRR, the numbers `eval --rag` is to report.

A question hits when one of its top-k passages comes from the expected source file (or, given an answer string,
contains it): whether the generator could have seen what it needed, apart from how well it then answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmforge.rag.index import Hit, RagIndex


@dataclass(frozen=True)
class RetrievalCase:
    question: str
    source: str  # the file the answer is in: a hit is a passage whose source ends with it
    answer: str | None = None  # if given, the passage must also contain it


def _relevant(hit: Hit, case: RetrievalCase) -> bool:
    return hit.source.endswith(case.source) and (case.answer is None or case.answer in hit.text)


def retrieval_quality(index: RagIndex, cases: list[RetrievalCase], k: int = 4) -> dict[str, float]:
    """hit_rate@k (share of questions with a relevant passage in the top k) and MRR@k over `cases`."""
    if not cases:
        raise ValueError("no questions to evaluate retrieval on")
    ranks = []
    for case in cases:
        hits = index.search(case.question, k)
        ranks.append(next((n for n, h in enumerate(hits, 1) if _relevant(h, case)), None))
    return {f"hit_rate@{k}": sum(r is not None for r in ranks) / len(ranks),
            f"mrr@{k}": sum(1 / r for r in ranks if r is not None) / len(ranks), "questions": len(ranks)}
