"""Scoring preference pairs (prompt / chosen / rejected, as prepare keeps them): the summed log-probability of each
completion given its prompt, and the implicit DPO reward against a reference model.

Shared by training (the held-out score at the end of a dpo/orpo/kto run) and `llmforge eval` on a preference split.

- logp_accuracy / logp_margin: the model alone, the share of pairs where log p(chosen|x) > log p(rejected|x) and the
  mean difference. Length-sensitive: a longer completion sums more negative terms, so a model can prefer the
  shorter answer without having learnt the preference; read it beside the reward.
- reward_accuracy / reward_margin (with a reference): DPO's implicit reward beta * (log p(y|x) - log p_ref(y|x)),
  which cancels what the reference already assigned (length included): the share of pairs where chosen's reward
  exceeds rejected's, and the mean margin between them.
"""

from __future__ import annotations

from typing import Any

import torch

from llmforge.progress import Progress


def preference_rows(rows: Any, tokenizer: Any) -> Any:
    """The prepared pairs as TRL tokenizes them. TRL's DPO and KTO tokenize the prompt text with the tokenizer's
    special tokens; the template already wrote bos into it, so a tokenizer that adds bos itself would get two."""
    bos = tokenizer.bos_token
    if not bos or not _adds_bos(tokenizer) or not len(rows):
        return rows
    return rows.map(lambda r: {"prompt": r["prompt"].removeprefix(bos)}, desc=None)


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


@torch.no_grad()
def completion_logps(model: Any, tokenizer: Any, rows: Any, batch_size: int = 8,
                     progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of each pair's chosen and rejected completion given its prompt, tokenized as TRL's
    DPO does (the completion starts where prompt and prompt + completion diverge): two (N,) tensors. `progress(n)`
    after each batch of n pairs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"chosen": [], "rejected": []}
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        prompts = tokenizer(batch["prompt"])["input_ids"]
        for key in ("chosen", "rejected"):
            full = tokenizer([p + c for p, c in zip(batch["prompt"], batch[key])])["input_ids"]
            out[key].append(_sequence_logps(model, prompts, full, tokenizer.pad_token_id or 0, device))
        if progress:
            progress(len(prompts))
    model.train(was_training)
    return torch.cat(out["chosen"]), torch.cat(out["rejected"])


def _sequence_logps(model: Any, prompts: list[list[int]], full: list[list[int]], pad: int,
                    device: torch.device) -> torch.Tensor:
    width = max(len(f) for f in full)
    ids = torch.full((len(full), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)  # (B, T)
    scored = torch.zeros_like(ids, dtype=torch.bool)  # (B, T): completion tokens
    for i, (p, f) in enumerate(zip(prompts, full)):
        ids[i, :len(f)] = torch.tensor(f)
        mask[i, :len(f)] = 1
        scored[i, _common_prefix(p, f):len(f)] = True
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
    token = logps.gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)  # (B, T-1)
    return (token * scored[:, 1:].to(device)).sum(-1).cpu()  # (B,)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(n, 1)  # the first token is never predicted

def preference_scores(policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor] | None,
                      beta: float) -> dict[str, float]:
    """The policy's own log-probability accuracy and mean margin (chosen - rejected), and with a reference the
    accuracy and mean margin of the implicit rewards beta * (policy - reference) log-probabilities."""
    scores = {"logp_accuracy": float((policy[0] > policy[1]).float().mean()),
              "logp_margin": float((policy[0] - policy[1]).mean())}
    if reference is None:
        return scores
    chosen = beta * (policy[0] - reference[0])  # (N,)
    rejected = beta * (policy[1] - reference[1])  # (N,)
    return {"reward_accuracy": float((chosen > rejected).float().mean()),
            "reward_margin": float((chosen - rejected).mean()), **scores}
