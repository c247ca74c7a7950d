"""Per-token int8 activations, per-layer sensitivity, weight-only layers and the quality gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmforge.compress.sensitivity import layer_sensitivity, most_sensitive, quantizable_layers
from llmforge.config import ModelConfig, QualityGate
from llmforge.models import int8
from llmforge.models.loader import load_model


def _batches(model: torch.nn.Module, n: int = 4, length: int = 12) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (n, length))  # (B, T)
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]


def test_per_token_int8_linear_is_close_to_float_and_independent_of_the_batch() -> None:
    torch.manual_seed(0)
    w, x = torch.randn(24, 32), torch.randn(5, 32)
    x[0] *= 100  # one token with huge activations must not cost the others precision
    q, scale = int8.quantize_weight(w)
    layer = int8.PerTokenInt8Linear(q, scale, None)
    y = layer(x)  # (5, 24)
    exact = x @ int8.dequantize(q, scale).T
    rel = (y - exact).norm(dim=1) / exact.norm(dim=1)  # per row
    assert float(rel.max()) < 0.02
    torch.testing.assert_close(layer(x[1:3]), y[1:3])  # a row's result does not depend on its batch


def test_sensitivity_finds_the_layer_with_an_outlier_channel_and_restores_the_model(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    layer = model.model.layers[1]
    with torch.no_grad():  # float model unchanged; down_proj's input gets one channel 1000x larger than the rest
        layer.mlp.up_proj.weight[0] *= 1000  # row j of up_proj scales input channel j of down_proj (gated product)
        layer.mlp.down_proj.weight[:, 0] /= 1000
    batches = _batches(model)
    with torch.no_grad():
        before = model(**batches[0]).logits
    rows = layer_sensitivity(model, batches)
    assert sorted(r["layer"] for r in rows) == sorted(quantizable_layers(model))
    assert rows[0]["layer"] == "model.layers.1.mlp.down_proj"
    assert rows[0]["kl_divergence"] > 10 * rows[len(rows) // 2]["kl_divergence"]
    assert all(0 <= r["top1_agreement"] <= 1 for r in rows)
    with torch.no_grad():
        torch.testing.assert_close(model(**batches[0]).logits, before)  # every swap was undone


def test_most_sensitive_takes_the_fewest_layers_covering_the_share() -> None:
    rows = [{"layer": "a", "kl_divergence": 6.0}, {"layer": "b", "kl_divergence": 3.0},
            {"layer": "c", "kl_divergence": 1.0}]
    assert most_sensitive(rows, 0.5) == ["a"]
    assert most_sensitive(rows, 0.7) == ["a", "b"]
    assert most_sensitive(rows, 1.0) == ["a", "b", "c"]


def test_weight_only_layers_reload_with_float_activations_at_the_same_size(tiny_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    parent, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    name = "model.layers.0.mlp.down_proj"
    int8.save_int8(parent, tokenizer, tmp_path / "all", "dynamic")
    int8.save_int8(parent, tokenizer, tmp_path / "mixed", "dynamic", weight_only=["lm_head", name])
    mixed = int8.load_int8(tmp_path / "mixed")
    assert isinstance(mixed.get_submodule(name), int8.Int8WeightOnlyLinear)
    assert isinstance(mixed.lm_head, int8.Int8WeightOnlyLinear)
    assert isinstance(mixed.get_submodule("model.layers.0.mlp.up_proj"), int8.PerTokenInt8Linear)
    sizes = [(tmp_path / d / int8.WEIGHTS_FILE).stat().st_size for d in ("all", "mixed")]
    assert sizes[0] == sizes[1]
    qconfig = json.loads((tmp_path / "mixed" / "config.json").read_text())["quantization_config"]
    assert qconfig["activation_scales"] == "per-token" and qconfig["weight_only"] == sorted(["lm_head", name])


def test_files_without_activation_scales_load_with_the_per_tensor_kernel(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    parent, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    int8.save_int8(parent, tokenizer, tmp_path, "dynamic")
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("activation_scales", "weight_only"):  # as written before these keys existed
        del config["quantization_config"][key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = int8.load_int8(tmp_path)
    assert not isinstance(model.get_submodule("model.layers.0.mlp.up_proj"), int8.PerTokenInt8Linear)


@pytest.mark.parametrize(("change", "agreement", "broken"), [(0.01, 0.95, 0), (0.21, 0.95, 1), (0.01, 0.61, 1),
                                                              (0.21, 0.61, 2)])
def test_quality_gate_names_each_broken_limit(change: float, agreement: float, broken: int) -> None:
    gate = QualityGate()
    result = gate.apply({"perplexity_change": change, "top1_agreement": agreement})
    assert len(result["gate_failures"]) == broken and result["gate_passed"] == (broken == 0)


def test_the_default_gate_fails_the_reported_onnx_int8_export() -> None:
    # issue #12: ONNX int8 of SmolLM2 had top-1 agreement 0.61 and +21% perplexity, and was called "pass"
    assert QualityGate().failures({"perplexity_change": 0.21, "top1_agreement": 0.61})


def test_an_export_that_fails_its_gate_is_marked_failed_and_fp32_formats_keep_their_tolerance() -> None:
    from llmforge.export.runner import _check

    measured = {"tokenization_identical": True, "greedy_identical": False, "max_abs_logits_diff": 37.7,
                "top1_agreement": 0.61, "perplexity_change": 0.21}
    failed = _check("onnx-int8", dict(measured), QualityGate())
    assert failed["passed"] is False and len(failed["gate_failures"]) == 2
    good = _check("gguf-q8_0", {**measured, "top1_agreement": 0.97, "perplexity_change": 0.004}, QualityGate())
    assert good["passed"] is True and good["gate_failures"] == []
    exact = _check("onnx", {**measured, "top1_agreement": 1.0, "perplexity_change": 0.0}, QualityGate())
    assert exact["passed"] is False and "gate_passed" not in exact  # fp32 is held to its tolerance instead


def test_compress_records_the_sensitivity_table_the_chosen_layers_and_the_gate(tiny_model_dir: Path, prepared: Path,
                                                                               tmp_path: Path) -> None:
    from llmforge.compress.config import CompressConfig, CompressOptions
    from llmforge.compress.runner import compress

    opts = CompressOptions(quantize={"scheme": "int8-dynamic", "weight_only": "auto", "sensitivity": True,
                                     "sensitivity_samples": 2}, calibration_samples=4, quality_samples=4,
                           generate_samples=0)
    result = compress(CompressConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                                     compress=opts, output_dir=tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    table = metrics["sensitivity"]
    assert [r["layer"] for r in table] == [r["layer"] for r in result.metrics["sensitivity"]]
    assert len(table) == len(quantizable_layers(load_model(ModelConfig(name_or_path=str(tiny_model_dir)))[0]))
    assert metrics["weight_only_layers"] and set(metrics["weight_only_layers"]) <= {r["layer"] for r in table}
    assert table[0]["layer"] in metrics["weight_only_layers"]  # the most sensitive layer is kept first
    assert metrics["passed"] == metrics["gate_passed"] == (not metrics["gate_failures"])
