"""Model presets: published architectures reproduce published parameter counts; memory formulas match what peft
and the KV cache really allocate; preset names resolve (pulled copy, hub id, or a `llmforge pull` hint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmforge.errors import LlmforgeError
from llmforge.models import footprint, presets
from llmforge.models.reference import resolve_model

# Parameter counts from the model cards (SmolLM2-135M: 134.5M as loaded here, see FIELD_NOTES).
PUBLISHED = {
    "smollm2-135m-instruct": 134.5e6, "smollm2-360m-instruct": 362e6, "smollm2-1.7b-instruct": 1.71e9,
    "qwen2.5-0.5b-instruct": 0.494e9, "qwen2.5-1.5b-instruct": 1.54e9, "qwen2.5-7b-instruct": 7.62e9,
    "llama-3.2-1b-instruct": 1.24e9, "llama-3.2-3b-instruct": 3.21e9, "dialogpt-small": 124e6,
    "dialogpt-medium": 355e6, "dialogpt-large": 774e6, "llama-2-7b": 6.74e9,
}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home" / "models"


def test_presets_reproduce_published_parameter_counts(home: Path) -> None:
    rows = {r["name"]: r for r in presets.list_presets()}
    assert set(rows) == set(PUBLISHED)
    for name, count in PUBLISHED.items():
        row = rows[name]
        assert row["parameters"] == pytest.approx(count, rel=0.01), name
        mem = row["memory_bytes"]
        assert row["parameters"] * 2 < mem["inference"] < mem["lora"] < mem["full"], name
        assert row["pulled"] is None


def _tiny(model_type: str) -> presets.Architecture:
    return presets.Architecture(model_type, 64, 2, 4, 2 if model_type != "gpt2" else 4, 128, 300, True, 128)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2"])
def test_lora_count_is_what_peft_creates(model_type: str) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = _tiny(model_type).hf_config()
    model = AutoModelForCausalLM.from_config(config)
    expected = footprint.lora_parameters(model)
    params = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=footprint.LORA_RANK, target_modules="all-linear"))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == expected
    fp = footprint.config_footprint(config, seq_len=32)
    assert fp["lora_parameters"] == expected
    assert fp["parameters"] == params


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_kv_cache_formula_matches_the_real_cache(model_type: str) -> None:
    from transformers import AutoModelForCausalLM

    config = _tiny(model_type).hf_config()
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        cache = model(torch.zeros(3, 10, dtype=torch.long), use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == footprint.kv_cache_bytes(config, tokens=10, batch=3, bytes_per_value=4)


def test_training_memory_parts() -> None:
    mem = footprint.training_memory(weight_bytes=100, trainable=10, trainable_bytes=40, activations=7)
    assert mem == {"weights": 100, "gradients": 40, "optimizer": 80, "activations": 7, "total": 227}


def test_hub_presets_resolve_to_hub_ids(home: Path) -> None:
    assert resolve_model("qwen2.5-0.5b-instruct").path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("Llama-2-7B").path == "meta-llama/Llama-2-7b-hf"  # names are case-insensitive
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").path == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_unpulled_preset_says_how_to_pull(home: Path) -> None:
    with pytest.raises(LlmforgeError, match=r"not pulled yet: run `llmforge pull smollm2-135m-instruct`"):
        resolve_model("smollm2-135m-instruct")
    (home / "smollm2-135m-instruct.partial").mkdir(parents=True)
    with pytest.raises(LlmforgeError, match=r"unfinished pull"):
        resolve_model("smollm2-135m-instruct")


def _fake_pull(run_dir: Path, sha256: str) -> None:
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    (run_dir / "manifest.json").write_text(json.dumps({"kind": "model", "model_dir": "model",
                                                       "source": {"sha256": sha256}}))


def test_pulled_preset_resolves_to_its_model_dir(home: Path) -> None:
    run_dir = home / "smollm2-135m-instruct"
    _fake_pull(run_dir, presets.SMOLLM2_WHEEL.sha256)
    assert Path(resolve_model("smollm2-135m-instruct").path) == run_dir / "model"


def test_pull_of_another_wheel_does_not_count(home: Path) -> None:
    _fake_pull(home / "smollm2-135m-instruct", "0" * 64)
    with pytest.raises(LlmforgeError, match="llmforge pull smollm2-135m-instruct"):
        resolve_model("smollm2-135m-instruct")


def test_a_local_directory_of_the_same_name_wins(home: Path, tiny_model_dir: Path) -> None:
    Path("smollm2-135m-instruct").symlink_to(tiny_model_dir)
    assert resolve_model("smollm2-135m-instruct").path == "smollm2-135m-instruct"


def test_models_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path))
    assert presets.models_home() == tmp_path / "models"
    monkeypatch.delenv("LLMFORGE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert presets.models_home() == tmp_path / "cache" / "llmforge" / "models"
