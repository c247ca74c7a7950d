"""Real tier (`pytest -m real`): SmolLM2-135M-Instruct's own tokenizer and ChatML template on CJK, Arabic,
Devanagari, Cyrillic and emoji text: encode/decode round-trips, prepare's masking trains exactly each answer and
`<|im_end|>`, and its GGUF export tokenizes the export parity corpus exactly as transformers does in llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.data.tokenize import IGNORE, render_chat, tokenize_batch
from llmforge.export.parity import MULTILINGUAL_TEXTS, PARITY_TEXTS

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def tokenizer(pulled: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(pulled / "model"))


@pytest.mark.parametrize("text", MULTILINGUAL_TEXTS)
def test_text_and_chat_round_trip_and_train_exactly_the_answer(tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    messages = [{"role": "system", "content": text}, {"role": "user", "content": text},
                {"role": "assistant", "content": text}]
    rendered = render_chat(tokenizer, messages)
    (sample,) = tokenize_batch(tokenizer, [rendered])
    assert tokenizer.decode(sample.input_ids) == rendered.text and rendered.text.count(text) == 3
    trained = tokenizer.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE])
    assert trained == text + "<|im_end|>"


def test_gguf_export_tokenizes_the_parity_corpus_as_transformers(pulled: Path, tokenizer, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from llmforge.export.gguf import export_gguf
    from llmforge.export.parity import tokenization_parity

    path = export_gguf(pulled / "model", tmp_path, outtype="f16")["path"]
    llm = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    report = tokenization_parity(lambda t: tokenizer(t)["input_ids"],
                                 lambda t: llm.tokenize(t.encode(), add_bos=adds_bos, special=True), PARITY_TEXTS)
    assert report["tokenization_identical"], report["mismatches"]
    llm.close()
