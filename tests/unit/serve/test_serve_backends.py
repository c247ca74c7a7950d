"""Backend choice from what an artifact declares, clear errors for the ones not available, the transformers
backend's batch state (KV cache) on the tiny model, and ONNX parity."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from llmforge.errors import ConfigError, MissingExtraError
from llmforge.serve.backends import BACKENDS, detect_backend, kv, load_backend
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
    (run / "manifest.json").write_text(json.dumps({"kind": "export", "formats": {"gguf-q8_0": "gguf/model.gguf"},
                                                   "source_model": str(tiny_model_dir)}))
    assert detect_backend(str(run)) == "llamacpp"  # what the export run's manifest says, not a file name


@pytest.mark.parametrize("name, extra", [("llamacpp", "llamacpp"), ("vllm", "vllm")])
def test_unavailable_backends_name_what_they_need(name: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.models.reference import ModelRef

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as where the extra is not installed: import fails
    with pytest.raises(MissingExtraError, match=extra):
        BACKENDS[name](ModelRef("some/model.gguf", "gguf", "some/model.gguf"), LoadOptions())


def test_unknown_backend_and_too_long_context_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(Exception, match="unknown backend 'tensorrt'"):
        load_backend(str(tiny_model_dir), backend="tensorrt")
    with pytest.raises(ConfigError, match="larger than the model's context length 256"):
        load_backend(str(tiny_model_dir), LoadOptions(device="cpu", max_model_len=4096))
    assert load_backend(str(tiny_model_dir), LoadOptions(device="cpu", max_model_len=64)).max_model_len == 64


@pytest.fixture(scope="module")
def gemma2_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Gemma 2: hybrid attention, every other layer a sliding window (64 tokens here), eager attention."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                          sliding_window=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gemma2")
    Gemma2ForCausalLM(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_kv_join_and_select_keep_each_rows_logits(family: str, tiny_model_dir: Path, request: Any) -> None:
    """Rows prefilled in one left-padded batch, joined from two batches, or selected out of one (their padding
    columns dropped) give each row the logits it has alone: what the engine's continuous batching relies on. Gemma
    2's sliding-window layers too, within the window (its served context is capped below it)."""
    model_dir = tiny_model_dir if family == "llama" else request.getfixturevalue("gemma2_dir")
    backend = load_backend(str(model_dir), LoadOptions(device="cpu", dtype="float32"))
    if family == "gemma2":
        assert backend.max_model_len == 63  # the 64-token window, not the 256 positions
    prompts = [backend.tokenizer(p)["input_ids"] for p in ["def add(a, b):", "class Stack:\n    def push(self, x):",
                                                           "import os"]]
    assert len({len(p) for p in prompts}) == 3
    solo = [backend.prefill([p])[0][0] for p in prompts]
    together, _ = backend.prefill(prompts)
    for i in range(3):
        torch.testing.assert_close(together[i], solo[i], atol=1e-4, rtol=1e-4)
    _, a = backend.prefill(prompts[:1])
    _, b = backend.prefill(prompts[1:])
    state = backend.join(a, b)
    assert state.rows == 3
    state = backend.select(state, [2, 0])  # drop the longest row: its padding columns go too
    assert state.mask.shape[1] == max(len(prompts[2]), len(prompts[0]))
    nxt = torch.stack([solo[2].argmax(), solo[0].argmax()])
    batched = backend.decode(state, nxt)
    for row, i in enumerate([2, 0]):
        _, one = backend.prefill([prompts[i]])
        expected = backend.decode(one, nxt[row:row + 1])[0]
        torch.testing.assert_close(batched[row], expected, atol=1e-4, rtol=1e-4)
    assert kv.select(state, []) is None


def test_onnx_backend_decodes_like_transformers(sharp_model_dir: Path, sharp_onnx_dir: Path) -> None:
    """The ONNX Runtime backend in the same engine: same greedy tokens as PyTorch, batched. On the sharp tiny
    model (tests/conftest.py), whose tokens depend on the context, and its session-wide ONNX export."""
    hf = load_backend(str(sharp_model_dir), LoadOptions(device="cpu", dtype="float32"))
    ort = load_backend(str(sharp_onnx_dir))
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
    assert len({tuple(ids) for ids in outputs[0]}) == len(prompts)  # the tokens depend on the prompt
    assert outputs[0] == outputs[1]
