"""Per-row token selection: greedy, temperature, top-k / top-p / min-p sampling, penalties, logit bias, grammar
constraints (structured output, `llmforge.serve.guided`), logprobs.

Each row of a batch carries its own parameters and its own seeded generator, so a request picks the same
tokens whether it decodes alone or next to others (its logits are the same either way).

Numerically safe for every value the API accepts: a temperature below `MIN_TEMPERATURE` is greedy (vLLM's
`_SAMPLING_EPS`; dividing by 1e-300 overflows to inf and softmax to NaN), filters always keep the most likely
token, and a seed of any size is reduced modulo 2**64 (what `torch.Generator` takes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

MIN_TEMPERATURE = 1e-5  # below this, sampling is greedy
SEED_RANGE = 1 << 64


@dataclass(frozen=True)
class SamplingParams:
    """What one sequence asks for. `logprobs` is the number of alternatives to report (None: no logprobs)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    ignore_eos: bool = False
    top_k: int = 0  # 0 (or -1): off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF/vLLM: > 1 discourages tokens of the prompt and of the output so far
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    grammar: Any = None  # llmforge.serve.guided.Grammar: structured output; each row makes its own matcher

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    @property
    def plain(self) -> bool:
        """Greedy with nothing to adjust, constrain or report: the whole batch's argmax serves it."""
        return self.greedy and not self.penalized and self.logprobs is None and self.grammar is None

    @property
    def penalized(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0
                or bool(self.logit_bias))


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass
class RowSampler:
    """The mutable part of one row's sampling: its generator and the counts its penalties need."""

    params: SamplingParams
    prompt_ids: tuple[int, ...] = ()  # what the repetition penalty counts besides the output
    generator: torch.Generator = field(init=False)
    counts: dict[int, int] = field(default_factory=dict)
    matcher: Any = field(init=False, default=None)  # this row's place in its grammar (structured output)

    def __post_init__(self) -> None:
        seed = self.params.seed % SEED_RANGE if self.params.seed is not None else random.getrandbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        if self.params.grammar is not None:
            self.matcher = self.params.grammar.matcher()

    @property
    def complete(self) -> bool:
        """The row's grammar is complete: nothing may follow."""
        return self.matcher is not None and self.matcher.done

    def pick(self, logits: torch.Tensor, argmax: int) -> tuple[int, TokenLogprob | None]:
        """Choose the next token from one row's logits (V,); `argmax` is precomputed for the whole batch."""
        p = self.params
        if p.plain:
            token = argmax
        else:
            scores = logits.float().cpu()  # (V,)
            if p.penalized:
                scores = self.adjust(scores)
            if self.matcher is not None:  # after penalties and bias, before temperature and the filters (vLLM's order)
                scores = self.matcher.mask(scores)
            token = int(scores.argmax()) if p.greedy else sample(scores, p.temperature, p.top_p, self.generator,
                                                                 top_k=p.top_k, min_p=p.min_p)
            if self.matcher is not None:
                self.matcher.advance(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        return token, (token_logprob(logits, token, p.logprobs) if p.logprobs is not None else None)


    def adjust(self, scores: torch.Tensor) -> torch.Tensor:
        """Logit bias, then the repetition penalty (prompt and output), then OpenAI's penalties (output)."""
        p = self.params
        if p.logit_bias:
            scores = scores.clone()
            ids = torch.tensor([i for i, _ in p.logit_bias], dtype=torch.long)
            scores[ids] += torch.tensor([b for _, b in p.logit_bias], dtype=scores.dtype)
        if p.repetition_penalty != 1.0:
            seen = set(self.prompt_ids) | set(self.counts)
            if seen:
                scores = apply_repetition_penalty(scores, seen, p.repetition_penalty)
        if self.counts and (p.presence_penalty or p.frequency_penalty):
            scores = apply_penalties(scores, self.counts, p.presence_penalty, p.frequency_penalty)
        # Extreme accepted values (a repetition penalty of 1e-300 divides a positive logit into inf) must still
        # leave something to sample: overflow saturates at the largest float instead of becoming inf.
        return torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(scores.dtype).max)


def apply_repetition_penalty(scores: torch.Tensor, seen: set[int], penalty: float) -> torch.Tensor:
    """CTRL's penalty as transformers and vLLM apply it: positive logits divided, negative ones multiplied."""
    ids = torch.tensor(sorted(seen), dtype=torch.long)
    out = scores.clone()
    picked = out[ids]
    out[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return out


def apply_penalties(scores: torch.Tensor, counts: dict[int, int], presence: float,
                    frequency: float) -> torch.Tensor:
    """OpenAI's penalties over the tokens generated so far: frequency scales with the count, presence does not."""
    ids = torch.tensor(list(counts), dtype=torch.long)
    n = torch.tensor(list(counts.values()), dtype=scores.dtype)
    out = scores.clone()
    out[ids] -= n * frequency + presence
    return out


def sample(scores: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator,
           top_k: int = 0, min_p: float = 0.0) -> int:
    """One token from `scores` (V,). Whatever the parameters, the most likely token stays a candidate."""
    if temperature < MIN_TEMPERATURE:
        return int(scores.argmax())
    if not bool(torch.isfinite(scores.max())):
        raise ValueError("the logits hold no finite maximum (NaN or inf): nothing to sample from")
    # Subtract the maximum before dividing: the largest scaled logit is 0, so exp never overflows.
    probs = torch.softmax((scores.double() - scores.max()) / temperature, dim=-1)  # (V,) float64
    sorted_probs, order = probs.sort(descending=True)
    drop = torch.zeros_like(sorted_probs, dtype=torch.bool)
    if 0 < top_k < len(sorted_probs):
        drop[top_k:] = True
    if min_p > 0.0:
        drop |= sorted_probs < min_p * sorted_probs[0]
    if top_p < 1.0:
        # The smallest prefix whose mass reaches top_p (compared in float64: top_p=1e-300 is not 0 there).
        drop |= sorted_probs.cumsum(-1) - sorted_probs >= top_p
    drop[0] = False  # the most likely token always stays
    sorted_probs[drop] = 0.0
    return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """Log-probabilities under the model's own distribution (before temperature and penalties), as vLLM reports."""
    logp = torch.log_softmax(logits.float().cpu(), dim=-1)  # (V,)
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        values, ids = logp.topk(min(top, len(logp)))  # a tiny vocabulary has fewer alternatives than asked
        alternatives = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token, float(logp[token]), alternatives)
