from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def deep_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the tiny model, with 4 layers: block weights are most of the parameters, as in real LLMs
    (Llama-2-7B: 96%), rather than the 2-layer model's 79%."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("deep-model")
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
