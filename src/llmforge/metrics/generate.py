"""Generation-based evaluation: answer held-out prompts, compare with the references.

The prepared split already holds everything needed: a sample's prompt is its tokens before the first trained
token, and its reference is the trained tokens (the first assistant turn, eos removed). So the model sees
exactly the prompt it was trained to answer, rendered by the same chat template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmforge.data.tokenize import IGNORE
from llmforge.progress import begin


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


def split_prompt(input_ids: list[int], labels: list[int], eos_id: int | None) -> tuple[list[int], list[int]]:
    """(prompt ids, reference ids) of a prepared sample: the first trained run of tokens is the reference."""
    start = next((i for i, lab in enumerate(labels) if lab != IGNORE), None)
    if start is None:
        return list(input_ids), []
    end = start
    while end < len(labels) and labels[end] != IGNORE:
        end += 1
    reference = list(input_ids[start:end])
    if reference and reference[-1] == eos_id:
        reference = reference[:-1]
    return list(input_ids[:start]), reference


def generate_batch(model: Any, tokenizer: Any, prompts: list[list[int]], decoding: Decoding) -> list[list[int]]:
    """Batched generation through the model's runtime (a torch model or `llmforge.models.runtimes.Runtime`);
    returns only the new tokens, cut at eos."""
    from llmforge.models.runtimes import as_runtime

    runtime = as_runtime(model)
    step = runtime.max_batch or len(prompts)
    outputs: list[list[int]] = []
    for start in range(0, len(prompts), step):
        outputs += runtime.generate(prompts[start : start + step], decoding.max_new_tokens,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                    temperature=decoding.temperature, top_p=decoding.top_p, seed=decoding.seed)
    results = []
    for row in outputs:
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        results.append(row)
    return results


def generate_samples(
    model: Any, tokenizer: Any, dataset: Any, decoding: Decoding, batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-sample records: prompt, reference and prediction as text, plus the prompt's token count."""
    pairs = [split_prompt(list(r["input_ids"]), list(r["labels"]), tokenizer.eos_token_id) for r in dataset]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # similar lengths: less padding
    predictions: dict[int, list[int]] = {}
    begin(progress, "generation", len(order))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, ids in zip(chunk, generate_batch(model, tokenizer, [pairs[i][0] for i in chunk], decoding)):
            predictions[i] = ids
        if progress:
            progress(len(chunk))
    return [
        {
            "index": i,
            "prompt": tokenizer.decode(pairs[i][0], skip_special_tokens=False),
            "reference": tokenizer.decode(pairs[i][1], skip_special_tokens=True),
            "prediction": tokenizer.decode(predictions[i], skip_special_tokens=True),
            "prompt_tokens": len(pairs[i][0]),
            "generated_tokens": len(predictions[i]),
        }
        for i in range(len(pairs))
    ]
