"""Shared fixtures: a tiny Llama model and tokenizer trained inside the test session, and small datasets.

No network, no hub: everything is built here in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.helpers import corpus, qa_records, write_jsonl


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmforge.models.tiny import build_model, train_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(corpus(), vocab_size=512)
    build_model(tokenizer, "test", seed=0).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture()
def qa_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", qa_records())


@pytest.fixture(scope="session")
def prepared(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The QA records prepared for the tiny model: 80% train, 10% validation, 10% test (read-only)."""
    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    root = tmp_path_factory.mktemp("prepared")
    data = write_jsonl(root / "qa.jsonl", qa_records(160))
    cfg = PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                        data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.1, test=0.1)),
                        output_dir=root / "prep")
    return prepare(cfg).output_dir


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with larger weights (std 0.15): at the default init (0.02) every next token is the same
    whatever the context, which would let a runtime that ignores the context, or a broken cache, pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() == 2):
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.15)
    out = tmp_path_factory.mktemp("sharp")
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def sharp_onnx_dir(sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sharp_model_dir` exported to ONNX once for the session (~4 s); tests copy it before writing next to it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from llmforge.config import ModelConfig
    from llmforge.export.onnx import export_onnx
    from llmforge.models.loader import load_model

    model, tokenizer = load_model(ModelConfig(name_or_path=str(sharp_model_dir), dtype="float32"))
    out = tmp_path_factory.mktemp("onnx") / "fp32"
    facts = export_onnx(model.eval(), tokenizer, out)
    assert facts["opset"] >= 17 and "model.onnx_data" in facts["files"]
    return out
