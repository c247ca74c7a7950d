from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.config import DataConfig, ModelConfig, PrepareConfig, SplitConfig
from llmforge.data.prepare import prepare
from tests.helpers import qa_records, write_jsonl


@pytest.fixture(scope="module")
def prepared(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress-data")
    data = write_jsonl(root / "qa.jsonl", qa_records(120))
    cfg = PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                        data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.1, test=0.15)),
                        output_dir=root / "prep")
    return prepare(cfg).output_dir


@pytest.fixture(scope="module")
def deep_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the tiny model, with 4 layers: block weights are most of the parameters, as in real LLMs
    (Llama-2-7B: 96%), rather than the 2-layer model's 79%."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import torch

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("deep-model")
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
