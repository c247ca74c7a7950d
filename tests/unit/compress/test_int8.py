from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmforge.compress.quality import compare_logits, torch_logits
from llmforge.config import ModelConfig
from llmforge.data.splits import load_split
from llmforge.models import int8
from llmforge.models.footprint import stored_weights
from llmforge.models.loader import load_model


def test_quantize_weight_is_within_half_a_step_per_channel() -> None:
    w = torch.randn(16, 32) * torch.linspace(0.01, 3, 16)[:, None]  # channels of very different ranges
    q, scale = int8.quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    assert q.abs().max() <= 127 and bool((q.abs().amax(dim=1) == 127).all())  # each channel uses its full range
    assert bool(((int8.dequantize(q, scale) - w).abs() <= scale[:, None] / 2 + 1e-7).all())


@pytest.mark.parametrize("activations", ["dynamic", "none"])
def test_int8_artifact_reloads_close_to_parent_and_small(tiny_model_dir: Path, tmp_path: Path,
                                                         activations: str, prepared: Path) -> None:
    parent, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    int8.save_int8(parent, tokenizer, tmp_path, activations)
    child = int8.load_int8(tmp_path)
    fp32_bytes = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    assert (tmp_path / int8.WEIGHTS_FILE).stat().st_size <= 0.30 * fp32_bytes
    assert stored_weights(child)[0] == stored_weights(parent)[0]  # every weight is there, none twice
    quality = compare_logits(torch_logits(parent), torch_logits(child), load_split(prepared, "test"))
    assert quality["kl_divergence"] < 0.05 and quality["top1_agreement"] > 0.8
    assert abs(quality["perplexity_change"]) < 0.05


def test_plain_transformers_refuses_the_int8_artifact(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    parent, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    int8.save_int8(parent, tokenizer, tmp_path, "dynamic")
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["quant_method"] == "llmforge"
    with pytest.raises(OSError, match="model.safetensors"):  # not silently reading int8 numbers as floats
        AutoModelForCausalLM.from_pretrained(str(tmp_path))


def test_int8_loader_rejects_a_tampered_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from llmforge.errors import LlmforgeError

    parent, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    int8.save_int8(parent, tokenizer, tmp_path, "dynamic")
    tensors = load_file(str(tmp_path / int8.WEIGHTS_FILE))
    del tensors["model.norm.weight"]
    save_file(tensors, str(tmp_path / int8.WEIGHTS_FILE))
    with pytest.raises(LlmforgeError, match="model.norm.weight"):
        int8.load_int8(tmp_path)
