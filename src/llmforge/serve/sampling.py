"""Per-row token selection: greedy, temperature and nucleus sampling, OpenAI penalties, logprobs.

Each row of a batch carries its own parameters and its own seeded generator, so a request picks the same
tokens whether it decodes alone or next to others (its logits are the same either way).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch


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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def plain(self) -> bool:
        """Greedy with nothing to adjust or report: the whole batch's argmax serves it."""
        return self.greedy and not self.penalized and self.logprobs is None

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass
class RowSampler:
    """The mutable part of one row's sampling: its generator and the counts its penalties need."""

    params: SamplingParams
    generator: torch.Generator = field(init=False)
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)
        self.generator = torch.Generator().manual_seed(seed)

    def pick(self, logits: torch.Tensor, argmax: int) -> tuple[int, TokenLogprob | None]:
        """Choose the next token from one row's logits (V,); `argmax` is precomputed for the whole batch."""
        p = self.params
        if p.plain:
            token = argmax
        else:
            scores = logits.float().cpu()  # (V,)
            if p.penalized and self.counts:
                scores = apply_penalties(scores, self.counts, p.presence_penalty, p.frequency_penalty)
            token = int(scores.argmax()) if p.greedy else sample(scores, p.temperature, p.top_p, self.generator)
        self.counts[token] = self.counts.get(token, 0) + 1
        return token, (token_logprob(logits, token, p.logprobs) if p.logprobs is not None else None)


def apply_penalties(scores: torch.Tensor, counts: dict[int, int], presence: float,
                    frequency: float) -> torch.Tensor:
    """OpenAI's penalties over the tokens generated so far: frequency scales with the count, presence does not."""
    ids = torch.tensor(list(counts), dtype=torch.long)
    n = torch.tensor(list(counts.values()), dtype=scores.dtype)
    out = scores.clone()
    out[ids] -= n * frequency + presence
    return out


def sample(scores: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    probs = torch.softmax(scores / temperature, dim=-1)  # (V,)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p; the most likely token always stays.
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """Log-probabilities under the model's own distribution (before temperature and penalties), as vLLM reports."""
    logp = torch.log_softmax(logits.float().cpu(), dim=-1)  # (V,)
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        values, ids = logp.topk(top)
        alternatives = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token, float(logp[token]), alternatives)
