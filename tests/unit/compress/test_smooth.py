from __future__ import annotations

from pathlib import Path

import torch

from llmforge.compress import smooth
from llmforge.config import ModelConfig
from llmforge.models.loader import load_model


def test_smoothing_keeps_the_float_model_and_flattens_activation_outliers(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    with torch.no_grad():  # a few outlier channels, as trained LLMs have
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight[:3] *= 30
    ids = torch.randint(5, model.config.vocab_size, (2, 16))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    first = model.model.layers[0].mlp.gate_proj
    before = smooth.input_maxima(model, batches)[first]
    assert smooth.smooth(model, batches, alpha=0.5) == 3 * model.config.num_hidden_layers
    after = smooth.input_maxima(model, batches)[first]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert float(after.max() / after.median()) < float(before.max() / before.median())
