"""The llama.cpp backend (optional extra): a GGUF export decodes like the transformers model, batched or alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmforge.serve.backends import detect_backend, load_backend
from llmforge.serve.backends.base import LoadOptions
from llmforge.serve.engine import Engine, EngineConfig, GenerationRequest
from llmforge.serve.sampling import SamplingParams

pytest.importorskip("llama_cpp")
PROMPTS = ["def add(a, b):", "class Stack:\n    def push(self, x):", "import os\n\ndef read(path):"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmforge.config import ModelConfig
    from llmforge.export.config import ExportConfig, ExportOptions
    from llmforge.export.runner import export

    out = tmp_path_factory.mktemp("gguf") / "export"
    export(ExportConfig(model=ModelConfig(name_or_path="demo"), export=ExportOptions(formats=["gguf-f32"]),
                        output_dir=out))
    return out / "gguf-f32"


def _greedy(backend: Any, prompts: list[str], together: bool) -> list[list[int]]:
    engine = Engine(backend, EngineConfig(max_batch=4, max_queue=4)).start()
    try:
        requests = [GenerationRequest(backend.tokenizer(p)["input_ids"],
                                      SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
                    for p in prompts]
        if together:
            return [c.token_ids for c in engine.generate(requests)]
        return [engine.generate([r])[0].token_ids for r in requests]
    finally:
        engine.close()


def test_gguf_serves_like_the_transformers_model(exported: Path) -> None:
    assert detect_backend(str(exported)) == "llamacpp"
    cpp = load_backend(str(exported), LoadOptions(max_rows=4))
    hf = load_backend("demo", LoadOptions(device="cpu"))
    reference = _greedy(hf, PROMPTS, together=False)
    assert _greedy(cpp, PROMPTS, together=False) == reference
    assert _greedy(cpp, PROMPTS, together=True) == reference  # rows in one llama.cpp batch, own sequences
    assert _greedy(cpp, PROMPTS * 2, together=True) == reference * 2  # sequence ids are freed and reused
