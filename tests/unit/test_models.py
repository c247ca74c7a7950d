from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models.chat import ensure_chat_template
from llmforge.models.loader import load_model, load_tokenizer
from llmforge.models.reference import DEMO_DIR, resolve_model


def test_demo_model_is_shipped_with_provenance_and_chat_template() -> None:
    provenance = json.loads((DEMO_DIR / "provenance.json").read_text())
    assert provenance["pretrain_steps"] > 0 and provenance["pretrain_tokens"] > 0
    model, tokenizer = load_model(ModelConfig(name_or_path="demo"))
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert (DEMO_DIR / "model.safetensors").exists()
    assert not list(DEMO_DIR.glob("*.bin")) and not list(DEMO_DIR.glob("*.pt"))  # safetensors, never pickle


def test_local_dir_and_hub_id_resolution(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model_dir)).path == str(tiny_model_dir)
    assert resolve_model("org/some-model").path == "org/some-model"  # hub ids pass through
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmforgeError, match="holds no model"):
        resolve_model(str(tmp_path / "empty"))


def test_unreachable_hub_id_is_a_clear_error() -> None:
    with pytest.raises(LlmforgeError, match="could not load model 'no-such-org/no-such-model'"):
        load_tokenizer(ModelConfig(name_or_path="no-such-org/no-such-model"))


def test_trust_remote_code_is_off_by_default() -> None:
    assert ModelConfig().trust_remote_code is False


def test_missing_chat_template_is_explained(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    tokenizer.chat_template = None
    with pytest.raises(LlmforgeError, match="no chat template"):
        ensure_chat_template(tokenizer)
    ensure_chat_template(tokenizer, "chatml")
    assert tokenizer.chat_template
