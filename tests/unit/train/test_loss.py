"""The chunked cross-entropy equals the model's own loss, and training with it equals training without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmforge.config import ModelConfig, TrainOptions
from llmforge.train import loss as loss_module
from llmforge.train import runner
from llmforge.train.config import TrainConfig
from llmforge.train.loss import causal_lm_loss, lm_loss


def _model(tiny_model_dir: Path, method: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model.config.use_cache = False
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # logits far from uniform, so that a wrong gradient cannot hide in a tiny one
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0,
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    return model.train()


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (3, 23), generator=generator)  # (B, T)
    labels = ids.clone()
    labels[:, :6] = -100  # prompts are not scored
    labels[2, 15:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("count", [None, 40])  # the Trainer's num_items_in_batch (an accumulated batch) or none
def test_chunked_loss_and_gradients_equal_the_model_loss(tiny_model_dir: Path, method: str,
                                                         count: int | None) -> None:
    model = _model(tiny_model_dir, method)
    batch = _batch(model.config.vocab_size)
    params = [p for p in model.parameters() if p.requires_grad]
    extra = {} if count is None else {"num_items_in_batch": torch.tensor(count)}
    plain = model(**batch, **extra).loss
    plain_grads = torch.autograd.grad(plain, params)
    head = model.get_output_embeddings()
    hidden = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=-1).hidden_states[-1]
    chunked = causal_lm_loss(hidden, head, batch["labels"], extra.get("num_items_in_batch"), chunk=7)  # 6 chunks
    chunked_grads = torch.autograd.grad(chunked, params)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    assert len(params) > 2 and any(g.abs().max() > 1e-3 for g in plain_grads)
    for got, want in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_lm_loss_never_asks_for_full_logits(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir, "lora")
    batch = _batch(model.config.vocab_size)
    loss, outputs = lm_loss(model, batch, base=model.get_base_model())
    assert outputs.logits.shape[1] == 1  # one position's logits, not (B, T, V)
    torch.testing.assert_close(loss, model(**batch).loss, rtol=0, atol=1e-5)
    with torch.no_grad():  # evaluation takes the same route without gradients
        torch.testing.assert_close(lm_loss(model, batch)[0], loss.detach(), rtol=0, atol=1e-6)


def test_lora_with_checkpointing_has_the_same_gradients(tiny_model_dir: Path) -> None:
    """peft freezes the embeddings, so checkpointed layers get inputs without grad: transformers must make
    them require grad (enable_input_require_grads) or LoRA would silently get no gradients."""
    model = _model(tiny_model_dir, "lora")
    batch = _batch(model.config.vocab_size)
    params = [p for p in model.parameters() if p.requires_grad]
    plain = torch.autograd.grad(lm_loss(model, batch)[0], params)
    model.activation_checkpointing_enable()
    checkpointed = torch.autograd.grad(lm_loss(model, batch)[0], params)
    for got, want in zip(checkpointed, plain):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _run(tiny_model_dir: Path, prepared: Path, out: Path, **opts) -> dict:
    options = TrainOptions(max_steps=3, batch_size=4, grad_accum=2, learning_rate=1e-2, logging_steps=1,
                           precision="fp32", gradient_checkpointing=False, **opts)
    return runner.train(TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                                    train=options, output_dir=out)).metrics


def test_training_with_the_chunked_loss_equals_the_model_loss(tiny_model_dir: Path, prepared: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Trainer, with gradient accumulation (num_items_in_batch spans two micro-batches)."""
    chunked = _run(tiny_model_dir, prepared, tmp_path / "chunked")
    monkeypatch.setattr(loss_module, "chunked_loss_supported", lambda model: False)
    plain = _run(tiny_model_dir, prepared, tmp_path / "plain")
    assert chunked["chunked_loss"] and not plain["chunked_loss"]
    for key in ("train_loss", "eval_loss"):
        assert chunked[key] == pytest.approx(plain[key], rel=1e-5)


def _family(name: str) -> torch.nn.Module:
    from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if name == "gpt2":  # Conv1D layers, learned positions; dropout off so that two passes agree
        return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                          embd_pdrop=0.0, attn_pdrop=0.0))
    return Gemma2ForCausalLM(Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                          final_logit_softcapping=5.0))  # the chunks must cap the logits too


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_chunked_loss_equals_the_model_loss_in_other_families(family: str) -> None:
    model = _family(family).train()
    batch = _batch(300)
    params = list(model.parameters())
    plain = model(**batch).loss
    chunked = lm_loss(model, batch)[0]
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    for got, want in zip(torch.autograd.grad(chunked, params), torch.autograd.grad(plain, params)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_chunked_loss_applies_where_it_can(tiny_model_dir: Path) -> None:
    from llmforge.train.loss import chunked_loss_applies

    model = _model(tiny_model_dir, "full")
    assert chunked_loss_applies(model, TrainOptions())
    assert not chunked_loss_applies(model, TrainOptions(method="distill", distill={"teacher": "demo"}))  # KL: logits
    assert not chunked_loss_applies(model, TrainOptions(fsdp="full_shard auto_wrap"))  # a sharded head
