from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmforge.data.tokenize import IGNORE, Tokenized, fit_length, render_chat, render_text, tokenize_batch


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def trained_text(tokenizer, sample: Tokenized) -> str:
    return tokenizer.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE])


def test_single_turn_labels_exactly_the_answer_and_eos(tokenizer) -> None:
    messages = [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi there"}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    assert trained_text(tokenizer, sample) == "hi there" + tokenizer.eos_token
    assert len(sample.input_ids) == len(sample.labels)
    # labels are aligned with inputs (the model shifts): each trained label equals its own input id
    assert all(lab in (IGNORE, tok) for tok, lab in zip(sample.input_ids, sample.labels))
    assert sample.labels[-2] == tokenizer.eos_token_id  # eos closes the turn; the trailing newline is context


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second answer"},
    ]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    eos = tokenizer.eos_token
    assert trained_text(tokenizer, sample) == f"first answer{eos}second answer{eos}"


def test_train_on_inputs_trains_everything(tokenizer) -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages, train_on_inputs=True)])
    assert sample.labels == sample.input_ids


def test_text_gets_bos_and_eos_and_is_all_trainable(tokenizer) -> None:
    (sample,) = tokenize_batch(tokenizer, [render_text("alpha beta")])
    assert sample.input_ids[0] == tokenizer.bos_token_id
    assert sample.input_ids[-1] == tokenizer.eos_token_id
    assert sample.labels == sample.input_ids


def test_batch_keeps_order_with_mixed_kinds(tokenizer) -> None:
    chat = render_chat(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    text = render_text("alpha")
    out = tokenize_batch(tokenizer, [text, chat, text])
    assert out[0] == out[2] and out[1].input_ids[0] == tokenizer.bos_token_id
    assert out[0].labels == out[0].input_ids and out[1].labels != out[1].input_ids


def test_length_policies() -> None:
    sample = Tokenized(list(range(10)), list(range(10)))
    assert fit_length(sample, 10, "drop") == [sample]
    assert fit_length(sample, 4, "drop") == []
    assert fit_length(sample, 4, "truncate") == [Tokenized([0, 1, 2, 3], [0, 1, 2, 3])]
    chunks = fit_length(sample, 4, "chunk")
    assert [c.input_ids for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


content = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
content = content.filter(lambda s: s.strip() and "<|" not in s and "<s>" not in s)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(content, content), min_size=1, max_size=4), system=st.one_of(st.none(), content))
def test_property_trainable_tokens_decode_to_assistant_contents(tokenizer, turns, system) -> None:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    eos = tokenizer.eos_token
    assert trained_text(tokenizer, sample) == "".join(a + eos for _, a in turns)
