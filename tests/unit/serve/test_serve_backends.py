"""Backend choice from what an artifact declares, clear errors for the ones not available, and ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.errors import ConfigError, MissingExtraError
from llmforge.serve.backends import BACKENDS, detect_backend, load_backend
from llmforge.serve.backends.base import LoadOptions
from llmforge.serve.engine import Engine, GenerationRequest
from llmforge.serve.sampling import SamplingParams


def test_backend_follows_the_artifacts_own_description(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert detect_backend("demo") == "transformers"
    assert detect_backend(str(tiny_model_dir)) == "transformers"
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "onnx_config.json").write_text(json.dumps({"format": "llmforge-onnx-causal-lm"}))
    assert detect_backend(str(onnx_dir)) == "onnx"
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"kind": "export-gguf"}))
    assert detect_backend(str(run)) == "llamacpp"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("name, extra", [("llamacpp", "llamacpp"), ("vllm", "vllm")])
def test_unavailable_backends_name_what_they_need(name: str, extra: str) -> None:
    if name == "llamacpp" and _installed("llama_cpp"):
        pytest.skip("llama-cpp-python is installed here: tests/unit/serve/test_serve_llamacpp.py serves with it")
    with pytest.raises(MissingExtraError, match=extra):
        BACKENDS[name]("some/model", LoadOptions())


def test_unknown_backend_and_too_long_context_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(Exception, match="unknown backend 'tensorrt'"):
        load_backend(str(tiny_model_dir), backend="tensorrt")
    with pytest.raises(ConfigError, match="larger than the model's context length 256"):
        load_backend(str(tiny_model_dir), LoadOptions(device="cpu", max_model_len=4096))
    assert load_backend(str(tiny_model_dir), LoadOptions(device="cpu", max_model_len=64)).max_model_len == 64


def test_onnx_backend_decodes_like_transformers(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The ONNX Runtime backend in the same engine: same greedy tokens as PyTorch, batched (export: ~11 s)."""
    pytest.importorskip("onnxruntime")
    export = pytest.importorskip("llmforge.export.onnx")
    hf = load_backend(str(tiny_model_dir), LoadOptions(device="cpu"))
    export.export_onnx(hf.model, hf.tokenizer, tmp_path / "onnx")  # type: ignore[attr-defined]
    ort = load_backend(str(tmp_path / "onnx"))
    assert ort.name == "onnx"
    prompts = ["def add(a, b):", "class Stack:\n    def push(self, x):", "x"]
    outputs = []
    for backend in (hf, ort):
        engine = Engine(backend).start()
        try:
            requests = [GenerationRequest(backend.tokenizer(p)["input_ids"],
                                          SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))
                        for p in prompts]
            outputs.append([c.token_ids for c in engine.generate(requests, timeout=60)])
        finally:
            engine.close()
    assert outputs[0] == outputs[1]
