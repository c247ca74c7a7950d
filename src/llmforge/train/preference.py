"""Preference training (`train.method` dpo, orpo, kto) as options of the one train recipe, through TRL's trainers.

The data is what `llmforge prepare` keeps for preference records: `prompt` (rendered through the chat template up to
the assistant's turn), `chosen` and `rejected` (each ending with the end-of-turn token), as text in TRL's standard
preference format; TRL tokenizes it. KTO takes the pairs unpaired (TRL splits each into a desirable and an
undesirable completion).

The reference model: with adapters (`train.preference.weights` lora/dora/qlora) the trainer gets the plain model and
a `peft_config`, and computes the reference with the adapter disabled, so there is no second copy of the weights;
with `full` TRL loads a frozen copy (ORPO needs none).

Held-out score: `llmforge.metrics.preference` over the validation pairs, with the model before training as the
reference (`llmforge eval` scores a preference split the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmforge.config import PREFERENCE_METHODS, TrainOptions
from llmforge.errors import require

EXTRA = "pref"


def is_preference(opts: TrainOptions) -> bool:
    return opts.method in PREFERENCE_METHODS


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
