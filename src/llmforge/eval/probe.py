"""A fixed probe of general ability: short instructions (facts, arithmetic, formatting), each scored by a rule.

Answered before and after fine-tuning on a narrow task, the probe shows whether the model kept what it knew.
The prompts are fixed and the checks are automatic (no judge model): an answer passes when it contains the
expected fact or number as a word, or has the asked-for form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def _has_word(*options: str, case: bool = False) -> Callable[[str], bool]:
    flags = 0 if case else re.I
    patterns = [re.compile(rf"(?<![\w]){re.escape(o)}(?![\w])", flags) for o in options]
    return lambda answer: any(p.search(answer) for p in patterns)


def _has_number(value: int, *words: str) -> Callable[[str], bool]:
    number = re.compile(rf"(?<![\d.]){value}(?![\d])(?!\.\d)")
    word = _has_word(*words) if words else (lambda answer: False)
    return lambda answer: bool(number.search(answer.replace(",", ""))) or word(answer)


def _only(expected: str) -> Callable[[str], bool]:
    return lambda answer: answer.strip().strip(".!\"'` \n") == expected


def _numbered(count: int) -> Callable[[str], bool]:
    return lambda answer: all(re.search(rf"^\s*{i}[.)]\s+\S", answer, flags=re.M) for i in range(1, count + 1))


def _comma_separated(count: int) -> Callable[[str], bool]:
    def check(answer: str) -> bool:
        lines = [line for line in answer.strip().splitlines() if line.count(",") >= count - 1]
        return bool(lines) and all(item.strip() for item in lines[0].split(","))

    return check


def _json_with(key: str, value: Any) -> Callable[[str], bool]:
    def check(answer: str) -> bool:
        match = re.search(r"\{.*?\}", answer, flags=re.S)
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            return False
        return isinstance(data, dict) and data.get(key) == value

    return check


@dataclass(frozen=True)
class ProbeItem:
    kind: str  # "fact", "arithmetic" or "format"
    prompt: str
    check: Callable[[str], bool]
    example: str  # an answer that passes: keeps the check honest in the tests


PROBE: tuple[ProbeItem, ...] = (
    ProbeItem("fact", "What is the capital of France?", _has_word("Paris"), 'The capital of France is Paris.'),
    ProbeItem("fact", "What is the capital of Japan?", _has_word("Tokyo"), 'Tokyo is the capital of Japan.'),
    ProbeItem("fact", "What is the capital of Italy?", _has_word("Rome"), 'Rome.'),
    ProbeItem("fact", "Which planet is the largest in our solar system?", _has_word("Jupiter"),
              'Jupiter is the largest planet.'),
    ProbeItem("fact", "Who wrote the play Romeo and Juliet?", _has_word("Shakespeare"),
              'William Shakespeare wrote it.'),
    ProbeItem("fact", "What is the chemical formula of water?", _has_word("H2O", "H₂O"),
              'The formula of water is H2O.'),
    ProbeItem("fact", "What color is the sky on a clear day?", _has_word("blue"), 'It is blue.'),
    ProbeItem("fact", "How many days are there in a week?", _has_number(7, "seven"), 'There are 7 days in a week.'),
    ProbeItem("fact", "At what temperature in degrees Celsius does water boil at sea level?", _has_number(100),
              'Water boils at 100 degrees Celsius.'),
    ProbeItem("fact", "Which gas do plants absorb from the air for photosynthesis?", _has_word("carbon dioxide", "CO2"),
              'Plants absorb carbon dioxide (CO2).'),
    ProbeItem("arithmetic", "What is 7 + 5?", _has_number(12, "twelve"), '7 + 5 = 12'),
    ProbeItem("arithmetic", "What is 9 times 3?", _has_number(27), '9 times 3 is 27.'),
    ProbeItem("arithmetic", "What is 20 minus 8?", _has_number(12, "twelve"), 'The answer is 12.'),
    ProbeItem("arithmetic", "What is 100 divided by 4?", _has_number(25), '100 / 4 = 25'),
    ProbeItem("arithmetic", "What is 15 + 27?", _has_number(42), '15 + 27 = 42.'),
    ProbeItem("arithmetic", "How many legs do two cats have in total?", _has_number(8, "eight"),
              'Two cats have 8 legs in total.'),
    ProbeItem("format", "Reply with only the word YES, in capital letters.", _only("YES"), 'YES'),
    ProbeItem("format", "Write the word hello in all capital letters.", _has_word("HELLO", case=True), 'HELLO'),
    ProbeItem("format", "Write a numbered list of three fruits.", _numbered(3), '1. Apple\n2. Banana\n3. Cherry'),
    ProbeItem("format", "List three colors, separated by commas, on one line.", _comma_separated(3),
              'Red, green, blue'),
    ProbeItem("format", 'Give a JSON object with the key "name" set to "Alice".', _json_with("name", "Alice"),
              '{"name": "Alice"}'),
    ProbeItem("format", "Translate 'thank you' into French.", _has_word("merci"), 'Merci !'),
)


def score_probe(answers: Sequence[str], items: Sequence[ProbeItem] = PROBE) -> dict[str, Any]:
    """Overall and per-kind accuracy of `answers` (one per item, in order), and each item's verdict."""
    if len(answers) != len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} probe items")
    passed = [bool(item.check(answer)) for item, answer in zip(items, answers)]
    kinds: dict[str, list[bool]] = {}
    for item, ok in zip(items, passed):
        kinds.setdefault(item.kind, []).append(ok)
    return {
        "score": sum(passed) / len(items), "passed": sum(passed), "items": len(items),
        "by_kind": {kind: sum(oks) / len(oks) for kind, oks in kinds.items()},
        "answers": [{"prompt": item.prompt, "answer": answer, "passed": ok}
                    for item, answer, ok in zip(items, answers, passed)],
    }


def chat_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                 batch_size: int = 16, stop_after_fences: int | None = None) -> list[str]:
    """Greedy answers to single-turn user prompts, rendered by the model's chat template as in training
    (no special tokens added beyond the template's), generated in left-padded batches of similar length.

    `stop_after_fences=2` ends an answer once its first fenced code block is closed (what a code scorer reads),
    which saves decoding the explanation that often follows; the same rule applies to every model scored.
    """
    import torch

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    answers: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [ids[i] for i in chunk]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # (B, T)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # (B, T)
        stopping = [_FencesClosed(tokenizer, width, stop_after_fences)] if stop_after_fences else None
        with torch.no_grad():
            out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                 do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id, stopping_criteria=stopping)  # (B, T + new)
        for i, row in zip(chunk, out[:, width:].tolist()):
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            answers[i] = tokenizer.decode(row, skip_special_tokens=True)
    return [answers[i] for i in range(len(ids))]


class _FencesClosed:
    """Per-row stopping criterion: the new text holds `fences` code fences (```)."""

    def __init__(self, tokenizer: Any, prompt_width: int, fences: int) -> None:
        self.tokenizer, self.width, self.fences = tokenizer, prompt_width, fences

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([t.count("```") >= self.fences for t in new], device=input_ids.device)  # (B,)


def probe_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Score change and which items were lost or gained between two `score_probe` results on the same items."""
    pairs = list(zip(before["answers"], after["answers"]))
    return {
        "score_change": after["score"] - before["score"],
        "lost": [b["prompt"] for b, a in pairs if b["passed"] and not a["passed"]],
        "gained": [b["prompt"] for b, a in pairs if a["passed"] and not b["passed"]],
    }
