from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmforge.compress import structured
from llmforge.config import ModelConfig
from llmforge.models.loader import load_model
from tests.helpers import generate_in_fresh_process


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_25_percent_cuts_parameters_and_file_and_loads_with_plain_transformers(deep_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model(ModelConfig(name_or_path=str(deep_model_dir)))
    before = _params(model)
    facts = structured.prune_structured(model, 0.25, heads=True, stats=None)
    assert facts["block_sparsity"] == pytest.approx(0.25, abs=0.01)
    assert 1 - _params(model) / before >= 0.20
    model.save_pretrained(str(tmp_path))
    size = lambda d: sum(p.stat().st_size for p in Path(d).glob("*.safetensors"))  # noqa: E731
    assert 1 - size(tmp_path) / size(deep_model_dir) >= 0.20
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))  # plain transformers, config updated
    assert _params(reloaded) == _params(model)
    assert reloaded.config.intermediate_size == facts["intermediate_size"]


@pytest.mark.integration
def test_a_pruned_model_loads_and_generates_in_a_fresh_interpreter(deep_model_dir: Path, tmp_path: Path) -> None:
    """The pruned directory stands alone: a new interpreter (~4 s, so the integration tier) loads it and decodes."""
    model, tokenizer = load_model(ModelConfig(name_or_path=str(deep_model_dir)))
    structured.prune_structured(model, 0.25, heads=True, stats=None)
    model.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    assert len(generate_in_fresh_process(tmp_path)) == 6


def test_units_that_contribute_nothing_are_the_ones_removed(tiny_model_dir: Path) -> None:
    """Zero the output weights of some MLP channels and of one query head per GQA group: pruning exactly those
    must leave the logits unchanged, which checks the slicing, the head order and the key/value groups."""
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    cfg = model.config
    head_dim = cfg.head_dim
    plan = structured.plan(cfg, 0.25, heads=True)
    assert plan.heads_per_group == 1 and plan.mlp_channels > 0
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    with torch.no_grad():
        for layer in model.model.layers:
            dead = torch.randperm(cfg.intermediate_size)[: plan.mlp_channels]
            layer.mlp.down_proj.weight[:, dead] = 0
            for group in range(cfg.num_key_value_heads):
                head = group * rep + int(torch.randint(rep, ()))
                layer.self_attn.o_proj.weight[:, head * head_dim:(head + 1) * head_dim] = 0
    ids = torch.randint(5, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        structured.prune_structured(model, 0.25, heads=True, stats=None)
        got = model(input_ids=ids).logits
    assert model.config.num_attention_heads == cfg.num_key_value_heads * (rep - 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_plan_never_splits_a_gqa_group_and_fills_the_budget_with_channels() -> None:
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=64)
    p = structured.plan(cfg, 0.25, heads=True)
    assert p.heads_per_group in (0, 1) and p.groups == 0
    removed = p.heads_per_group * 2 * 2 * 256 * 64 + p.mlp_channels * 3 * 256
    total = 2 * 256 * 64 * 6 + 3 * 256 * 768
    assert removed / total == pytest.approx(0.25, abs=0.01)
    mha = LlamaConfig(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=4)
    assert structured.plan(mha, 0.5, heads=True).heads_per_group == 0  # one query head per group: whole groups
    assert structured.plan(cfg, 0.25, heads=False).heads_per_group == 0


def test_activation_importance_uses_calibration_statistics(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    ids = torch.randint(5, model.config.vocab_size, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    stats = structured.activation_stats(model, [{"input_ids": ids, "attention_mask": mask}])
    assert len(stats) == model.config.num_hidden_layers
    assert stats[0]["mlp"].shape == (model.config.intermediate_size,)
    assert stats[0]["attn"].shape == (model.config.num_attention_heads * model.config.head_dim,)
    assert bool((stats[0]["mlp"] >= 0).all()) and float(stats[0]["mlp"].sum()) > 0
