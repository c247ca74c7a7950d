"""The general-ability probe: every check accepts its example answer and rejects wrong ones."""

from __future__ import annotations

import pytest

from llmforge.eval.probe import PROBE, chat_answers, probe_change, score_probe


def test_every_item_accepts_its_example_and_rejects_an_unrelated_answer() -> None:
    assert len({p.prompt for p in PROBE}) == len(PROBE)
    assert {p.kind for p in PROBE} == {"fact", "arithmetic", "format"}
    for item in PROBE:
        assert item.check(item.example), item.prompt
        assert not item.check("I am not sure, sorry."), item.prompt


@pytest.mark.parametrize(("prompt", "wrong"), [
    ("What is 7 + 5?", "7 + 5 = 13"),
    ("What is 100 divided by 4?", "It is 2.5"),
    ("Write the word hello in all capital letters.", "hello"),
    ("Reply with only the word YES, in capital letters.", "YES, of course! Anything else?"),
    ("Write a numbered list of three fruits.", "1. Apple\n2. Banana"),
    ('Give a JSON object with the key "name" set to "Alice".', '{"name": "Bob"}'),
])
def test_near_misses_fail(prompt: str, wrong: str) -> None:
    assert not next(p for p in PROBE if p.prompt == prompt).check(wrong)


def test_scores_and_change() -> None:
    right = score_probe([p.example for p in PROBE])
    assert right["score"] == 1.0 and right["passed"] == right["items"] == len(PROBE)
    assert set(right["by_kind"].values()) == {1.0}
    worse = [p.example for p in PROBE]
    worse[0] = "I do not know."
    after = score_probe(worse)
    assert after["passed"] == len(PROBE) - 1
    change = probe_change(right, after)
    assert change["lost"] == [PROBE[0].prompt] and change["gained"] == []
    assert change["score_change"] == pytest.approx(-1 / len(PROBE))
    with pytest.raises(ValueError):
        score_probe(["only one answer"])


def test_chat_answers_match_unbatched_generation(tiny_model_dir) -> None:
    from llmforge.config import ModelConfig
    from llmforge.models.loader import load_model

    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    prompts = ["def f", "hello world and a longer prompt here", "x"]
    batched = chat_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [chat_answers(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and len(batched) == len(prompts)


def test_fence_stop_is_per_row_and_ignores_the_prompt(tiny_model_dir) -> None:
    import torch
    from transformers import AutoTokenizer

    from llmforge.eval.probe import _FencesClosed

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompt = tokenizer("``` ``` in the prompt", add_special_tokens=False)["input_ids"]
    closed = tokenizer("```python\nx = 1\n```", add_special_tokens=False)["input_ids"]
    open_ = tokenizer("```python\nx = 1\n", add_special_tokens=False)["input_ids"]
    width = max(len(closed), len(open_))
    rows = [prompt + closed + [tokenizer.pad_token_id or 0] * (width - len(closed)),
            prompt + open_ + [tokenizer.pad_token_id or 0] * (width - len(open_))]
    done = _FencesClosed(tokenizer, len(prompt), fences=2)(torch.tensor(rows), None)
    assert done.tolist() == [True, False]
