from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.errors import LlmforgeError
from llmforge.eval.similarity import embedding_similarity


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
