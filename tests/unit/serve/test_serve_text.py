"""Pure parts of serving: incremental detokenization with stop strings, sampling, penalties, schemas."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from llmforge.serve.detok import IncrementalText
from llmforge.serve.sampling import RowSampler, SamplingParams, apply_penalties, sample, token_logprob
from llmforge.serve.schemas import BatchChatRequest, ChatCompletionRequest, ChatRequest, CompletionRequest


class ByteTokenizer:
    """Token id = one UTF-8 byte, so a character can be split across tokens."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def run(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], IncrementalText]:
    inc = IncrementalText(ByteTokenizer(), stop)
    pieces = []
    for b in text.encode():
        pieces.append(inc.push(b))
        if inc.stopped:
            break
    pieces.append(inc.flush())
    return pieces, inc


def test_pieces_join_to_the_full_text_and_never_split_a_character() -> None:
    pieces, _ = run("héllo wörld")
    assert "".join(pieces) == "héllo wörld"
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_is_cut_and_never_leaks_even_split_across_tokens() -> None:
    pieces, inc = run("abc STOP def", stop=("STOP",))
    assert "".join(pieces) == "abc "
    assert inc.stopped
    assert not any("S" in p for p in pieces)


def test_earliest_of_several_stop_strings_wins() -> None:
    pieces, _ = run("one two three", stop=("three", "two"))
    assert "".join(pieces) == "one "


def test_text_held_for_a_possible_stop_is_released_when_it_is_not_one() -> None:
    pieces, inc = run("a ST b", stop=("STOP",))
    assert "".join(pieces) == "a ST b" and not inc.stopped


def test_penalties_follow_openai_formula() -> None:
    scores = torch.zeros(5)
    out = apply_penalties(scores, {1: 3, 2: 1}, presence=0.5, frequency=0.25)
    assert out.tolist() == pytest.approx([0.0, -1.25, -0.75, 0.0, 0.0])


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    scores = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    g = torch.Generator().manual_seed(0)
    picks = {sample(scores, 1.0, 0.5, g) for _ in range(200)}
    assert picks == {0}
    picks = {sample(scores, 1.0, 0.85, g) for _ in range(400)}
    assert picks == {0, 1}


def test_seeded_rows_repeat_and_greedy_rows_take_the_argmax() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(temperature=1.0, seed=7)
    a = [RowSampler(p).pick(logits, 0)[0] for _ in range(3)]
    assert len(set(a)) == 1
    greedy = RowSampler(SamplingParams(temperature=0.0, logprobs=2))
    token, lp = greedy.pick(logits, int(logits.argmax()))
    assert token == int(logits.argmax())
    assert lp is not None and len(lp.top) == 2 and lp.top[0][0] == token
    assert lp.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]))
    assert token_logprob(logits, 3, 0).top == ()


def test_requests_validate_like_openai() -> None:
    ok = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         "max_completion_tokens": 5, "stop": "x", "store": True, "metadata": {"a": "b"}})
    assert ok.token_limit == 5 and ok.stop == ["x"] and ok.messages[0].text() == "hi"
    for bad in ({"messages": []}, {"temperature": 3}, {"stop": ["a", "b", "c", "d", "e"]}, {"n": 0},
                {"top_logprobs": 2}, {"tools": [{"type": "function"}]}, {"logit_bias": {"x": 2}},
                {"logit_bias": {"1": 101}}, {"guided_regex": 3}, {"top_k": -2}, {"min_p": 1.5},
                {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                  **bad})
    assert CompletionRequest.model_validate({"model": "m", "prompt": [1, 2]}).token_limit == 16
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": True})


def test_seed_fields_accept_max_length_or_max_tokens() -> None:
    assert ChatRequest.model_validate({"message": "hi", "max_length": 7}).token_limit == 7
    assert ChatRequest.model_validate({"message": "hi", "max_tokens": 9}).token_limit == 9
    assert ChatRequest.model_validate({"message": "hi"}).token_limit == 128
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"message": "hi", "max_length": 7, "max_tokens": 9})
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"message": ""})
    with pytest.raises(ValidationError):
        BatchChatRequest.model_validate({"messages": []})
