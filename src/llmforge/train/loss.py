"""The causal-LM loss without the (batch, tokens, vocabulary) logits: a chunked cross-entropy.

A model's own loss projects every position onto the vocabulary at once: for SmolLM2 at batch 8 x 512 that is a
0.8 GB fp32 logits tensor, then the same again for the log-softmax the loss saves, and twice more for their
gradients in the backward pass. The field's answer is to fuse the output projection into the loss (Liger Kernel's
fused linear cross-entropy, Apple's cut-cross-entropy); this is the plain-torch form of it for every device. The
model returns its final hidden states (`output_hidden_states=-1`, and `logits_to_keep=1` so it computes only one
position's logits); only the positions whose next token is scored are kept, and the head and the cross-entropy
run over those a chunk of tokens at a time. Each chunk's gradient is computed as soon as its logits exist, so one
chunk's logits are alive at a time and nothing is recomputed in the backward pass.

The loss is the same as the model's (`transformers.loss.ForCausalLMLoss`): summed over tokens whose label is not
IGNORE, divided by `num_items_in_batch` (the Trainer's count over the accumulated batch) or else by the tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from llmforge.config import TrainOptions
from llmforge.data.tokenize import IGNORE

CHUNK_LOGIT_BYTES = 64 * 2**20  # fp32 logits per chunk: matmuls big enough to run at full speed, small next to weights


def chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk's fp32 logits take CHUNK_LOGIT_BYTES."""
    return max(1, CHUNK_LOGIT_BYTES // (4 * vocab_size))


def _chunk_sum(head: Any, h: torch.Tensor, y: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = head(h).float()  # (C, V): upcast as the model's own loss does
    if softcap:  # Gemma 2 caps its final logits: logits = cap * tanh(logits / cap)
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, y, reduction="sum")


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of head(h) against y; forward computes each chunk's gradients right away."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, y: torch.Tensor, head: Any, softcap: float | None, chunk: int,
                *params: torch.Tensor) -> torch.Tensor:
        grad_h = torch.zeros_like(h)  # (N, H)
        grad_params = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            with torch.enable_grad():
                x = h[start : start + chunk].detach().requires_grad_(True)  # (C, H)
                loss = _chunk_sum(head, x, y[start : start + chunk], softcap)
                grads = torch.autograd.grad(loss, [x, *params])
            total += loss.detach()
            grad_h[start : start + chunk] = grads[0]
            for acc, g in zip(grad_params, grads[1:]):
                acc += g
        ctx.save_for_backward(grad_h, *grad_params)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Any:
        grad_h, *grad_params = ctx.saved_tensors
        return (grad_h * grad_output, None, None, None, None, *(g * grad_output for g in grad_params))


def causal_lm_loss(
    hidden: torch.Tensor, head: Any, labels: torch.Tensor, num_items_in_batch: Any = None, *,
    softcap: float | None = None, chunk: int | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of `head(hidden)` against `labels`, one chunk of scored tokens at a time.

    hidden: (B, T, H) final hidden states; labels: (B, T) aligned with the inputs (position t predicts t + 1).
    """
    targets = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]  # (B, T): the token each position predicts
    scored = targets != IGNORE  # (B, T)
    h = hidden[scored]  # (N, H): prompts and padding need no logits
    y = targets[scored]  # (N,)
    step = chunk or chunk_tokens(head.weight.shape[0])
    params = [p for p in head.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and (h.requires_grad or params):
        total = _ChunkedCrossEntropy.apply(h, y, head, softcap, step, *params)
    else:  # evaluation: no gradients to compute
        total = sum((_chunk_sum(head, h[i : i + step], y[i : i + step], softcap)
                     for i in range(0, h.shape[0], step)), torch.zeros((), device=h.device))
    denominator = num_items_in_batch if num_items_in_batch is not None else y.numel()
    if torch.is_tensor(denominator):
        denominator = denominator.to(total.device)
    return total / denominator


def chunked_loss_supported(model: Any) -> bool:
    """Whether the model's logits are its output embeddings applied to its last hidden state (plus Gemma 2's
    soft-capping, which the chunks apply too). Models that scale their logits otherwise keep their own loss."""
    config = model.config
    head = model.get_output_embeddings()
    scaled = any(getattr(config, key, None) not in (None, 1, 1.0) for key in ("logit_scale", "logits_scaling"))
    return isinstance(head, torch.nn.Module) and hasattr(head, "weight") and not scaled


def chunked_loss_applies(model: Any, opts: TrainOptions) -> bool:
    """Whether a run of `opts` trains `model` with `causal_lm_loss`: not distillation (its KL term needs the full
    logits), not sharded runs (the head's weights live in shards there), and only for a supported model."""
    return opts.method != "distill" and not (opts.fsdp or opts.deepspeed) and chunked_loss_supported(model)


def lm_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, base: Any = None) -> tuple[Any, Any]:
    """(loss, outputs) of a causal LM on a batch with labels, through `causal_lm_loss`. `model` may be wrapped
    (peft, DDP): it is called as a whole; `base` is the unwrapped model whose head and config are read."""
    base = base if base is not None else model
    features = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**features, output_hidden_states=-1, logits_to_keep=1)  # logits of one position only
    loss = causal_lm_loss(outputs.hidden_states[-1], base.get_output_embeddings(), inputs["labels"],
                          num_items_in_batch, softcap=getattr(base.config, "final_logit_softcapping", None))
    return loss, outputs


class ChunkedLossTrainer(Trainer):  # type: ignore[misc]
    """transformers' Trainer with `causal_lm_loss` in place of the model's loss; same value, same scaling."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        custom = self.label_smoother is not None or self.compute_loss_func is not None or self.args.n_gpu > 1
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled  # the head's weights live in shards there
        if custom or sharded or "labels" not in inputs or "shift_labels" in inputs:  # the Trainer's own paths
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = lm_loss(model, inputs, num_items_in_batch, self.accelerator.unwrap_model(model))
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's tokens and gradients are averaged: as Trainer.compute_loss
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss
