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
