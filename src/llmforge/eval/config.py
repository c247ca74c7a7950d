"""`llmforge eval`'s config: which split is scored, and which answer metrics are added."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmforge.config import ModelConfig, Section


class EvalOptions(Section):
    split: Literal["train", "validation", "test"] = Field("test", description="Prepared split to score.")
    batch_size: int = Field(8, ge=1)
    max_samples: int | None = Field(None, ge=1, description="Score at most this many samples.")
    window: int | None = Field(
        None, ge=2, description="Score samples longer than this with sliding windows (default: whole sample)."
    )
    stride: int | None = Field(None, ge=1, description="Sliding-window stride (default: window // 2).")
    generate_samples: int = Field(
        0, ge=0, description="Also answer the first N prompts and score the answers (ROUGE, exact match, BERTScore, "
        "coherence); 0: off."
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest generated answer.")
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily.")
    syntax: Literal["none", "python"] = Field("none", description="Also check answers parse as this language.")
    harness_tasks: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks to run too (needs the 'lmeval' extra)."
    )
    harness_include: Path | None = Field(None, description="Folder of custom harness task YAMLs (offline tasks).")
    harness_limit: int | None = Field(None, ge=1, description="At most this many documents per harness task.")
    similarity_model: str | None = Field(
        None, description="Local encoder model dir: adds mean-pooled embedding cosine similarity of answers."
    )
    rag: Path | None = Field(
        None, description="A `llmforge rag index` dir: adds retrieval hit rate@k and MRR@k, and answer quality with "
        "and without the retrieved passages (metrics.json 'rag')."
    )
    rag_qa: Path | None = Field(
        None, description="QA JSONL for --rag (question, answer, optional source); default: questions derived from "
        "the docstrings of the index's Python files."
    )
    rag_questions: int = Field(32, ge=1, description="At most this many questions for --rag.")
    rag_top_k: int = Field(4, ge=1, description="Passages retrieved per question for --rag.")
    reference: str | None = Field(
        None, description="Preference splits: the model the implicit DPO reward is measured against (default: for "
        "an adapter run, its base with the adapter off; otherwise the reward is not reported, only log-probability "
        "accuracy and margin).")
    beta: float | None = Field(
        None, gt=0, description="Preference splits: the DPO beta that scales the rewards (default: the run's "
        "train.preference.beta, else 0.1). Reward accuracy does not depend on it.")

class EvalConfig(Section):
    """`llmforge eval`: score a model on a prepared split (token-weighted perplexity over trainable tokens)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: Path = Field(..., description="A prepared dataset run directory.")
    eval: EvalOptions = Field(default_factory=EvalOptions)
    output_dir: Path = Field(Path("runs/eval"))
