"""Preference training (`train.method` dpo, orpo, kto) as options of the one train recipe, through TRL's trainers.

The data is what `llmforge prepare` keeps for preference records: `prompt` (rendered through the chat template up to
the assistant's turn), `chosen` and `rejected` (each ending with the end-of-turn token), as text in TRL's standard
preference format; TRL tokenizes it. KTO takes the pairs unpaired (TRL splits each into a desirable and an
undesirable completion).

The reference model: with adapters (`train.preference.weights` lora/dora/qlora) the trainer gets the plain model and
a `peft_config`, and computes the reference with the adapter disabled, so there is no second copy of the weights;
with `full` TRL loads a frozen copy (ORPO needs none).

Held-out score (`preference_scores`): the implicit reward of each validation pair, beta * (log p(y|x) - log
p_ref(y|x)) summed over the completion's tokens, with the model before training as the reference: the share of
pairs where chosen's reward exceeds rejected's, and the mean margin between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmforge.config import PREFERENCE_METHODS, TrainOptions
from llmforge.errors import require

EXTRA = "pref"


def is_preference(opts: TrainOptions) -> bool:
    return opts.method in PREFERENCE_METHODS


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


def pair_lengths(rows: Any, tokenizer: Any) -> list[int]:
    """Tokens of each pair's longer sequence (prompt + chosen or prompt + rejected)."""
    out: list[int] = []
    for start in range(0, len(rows), 1000):
        batch = rows[start:start + 1000]
        chosen, rejected = ([p + c for p, c in zip(batch["prompt"], batch[key])] for key in ("chosen", "rejected"))
        out += [max(len(a), len(b)) for a, b in zip(tokenizer(chosen)["input_ids"], tokenizer(rejected)["input_ids"])]
    return out


@dataclass
class PreferenceParts:
    """What the recipe hands TRL: the trainer and its config class, the config's extra fields and the trainer's
    extra arguments."""

    trainer_cls: type
    args_cls: type
    args: dict[str, Any]
    trainer_kwargs: dict[str, Any]


def preference_parts(opts: TrainOptions) -> PreferenceParts:
    require("trl", EXTRA)
    from llmforge.train.methods import lora_config

    beta = opts.preference.beta
    # No truncation: prepare already applied data.max_length's policy to the data it kept.
    common: dict[str, Any] = {"beta": beta, "max_length": None}
    kwargs: dict[str, Any] = {}
    if opts.weights != "full":
        kwargs["peft_config"] = lora_config(opts)
    if opts.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return PreferenceParts(DPOTrainer, DPOConfig, common, {"ref_model": None, **kwargs})
    if opts.method == "kto":
        from trl import KTOConfig, KTOTrainer

        # KTO's KL estimate pairs each completion with its neighbours' prompts in a fixed-order batch: TRL refuses
        # any other sampling (the recipe shuffles the pairs once instead, `train.shuffle`).
        sequential = {"train_sampling_strategy": "sequential"}
        return PreferenceParts(KTOTrainer, KTOConfig, {**common, **sequential}, {"ref_model": None, **kwargs})
    from trl.experimental.orpo import ORPOConfig

    # ORPO's batches carry no `input_ids` key for the Trainer to count tokens from: the subclass counts them.
    return PreferenceParts(_counting_orpo(), ORPOConfig, {**common, "include_num_input_tokens_seen": "no"}, kwargs)


def _counting_orpo() -> type:
    from trl.experimental.orpo import ORPOTrainer

    class CountingORPOTrainer(ORPOTrainer):  # type: ignore[misc]
        """ORPOTrainer that counts the tokens it trains on, as the Trainer counts SFT's and DPO's (non-padding
        prompt + chosen and prompt + rejected tokens), so that train_tokens and tokens/s are reported for ORPO too."""

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if model.training:
                seen = sum(inputs[k].sum() for k in ("chosen_attention_mask", "rejected_attention_mask"))
                self.state.num_input_tokens_seen += int(self.accelerator.gather(seen.reshape(1)).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return CountingORPOTrainer


@torch.no_grad()
def completion_logps(model: Any, tokenizer: Any, rows: Any, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of each pair's chosen and rejected completion given its prompt, tokenized as TRL's
    DPO does (the completion starts where prompt and prompt + completion diverge): two (N,) tensors."""
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


def preference_scores(policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor],
                      beta: float) -> dict[str, float]:
    """Reward accuracy and mean margin of the implicit rewards beta * (policy - reference) log-probabilities, and
    the policy's own mean log-probability margin (chosen - rejected)."""
    chosen = beta * (policy[0] - reference[0])  # (N,)
    rejected = beta * (policy[1] - reference[1])  # (N,)
    return {
        "reward_accuracy": float((chosen > rejected).float().mean()),
        "reward_margin": float((chosen - rejected).mean()),
        "logp_margin": float((policy[0] - policy[1]).mean()),
    }
