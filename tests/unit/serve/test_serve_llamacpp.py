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
    """The demo model's gguf-f32 in an export run with the manifest `llmforge export` writes (0.1 s; the export
    command itself, with its parity and speed checks, ~10 s, is tested in tests/integration/test_export.py)."""
    from llmforge.artifacts import RunDir
    from llmforge.export.gguf import export_gguf
    from llmforge.models.reference import DEMO_DIR

    out = tmp_path_factory.mktemp("gguf") / "export"
    with RunDir(out, kind="export", command="export", config={}) as run:
        gguf = Path(export_gguf(DEMO_DIR, run.file("gguf-f32"), outtype="f32")["path"])
        run.extra = {"formats": {"gguf-f32": str(gguf.relative_to(run.staging))},
                     "source_model": str(DEMO_DIR.resolve())}
        run.finish({})
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
    hf = load_backend("demo", LoadOptions(device="cpu", dtype="float32"))
    reference = _greedy(hf, PROMPTS, together=False)
    assert _greedy(cpp, PROMPTS, together=False) == reference
    assert _greedy(cpp, PROMPTS, together=True) == reference  # rows in one llama.cpp batch, own sequences
    assert _greedy(cpp, PROMPTS * 2, together=True) == reference * 2  # sequence ids are freed and reused
