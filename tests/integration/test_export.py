"""`llmforge export` end to end on a tiny model: every format is written and parity-checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import cli, prepared_workdir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-cli")
    prepared_workdir(root, tiny_model_dir, 60)
    cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--method", "lora", "--output", "adapter",
        "--max-steps", "2", cwd=root)
    return root


def test_onnx_and_gguf_exports_pass_parity(tiny_model_dir: Path, workdir: Path) -> None:
    out = cli("export", "--model", str(tiny_model_dir), "--data", "prep", "--output", "exported",
              "-f", "onnx", "-f", "onnx-int8", "-f", "gguf-f16", "-f", "gguf-q8_0", cwd=workdir)
    assert "parity" in out.stdout
    metrics = json.loads((workdir / "exported" / "metrics.json").read_text())
    onnx = metrics["formats"]["onnx"]
    assert onnx["max_abs_logits_diff"] <= 1e-3 and onnx["greedy_identical"] and onnx["tokenization_identical"]
    assert onnx["passed"] is True
    int8 = metrics["formats"]["onnx-int8"]
    assert int8["bytes"] < onnx["bytes"] / 2 and int8["top1_agreement"] > 0.5  # it runs, and it is smaller
    for fmt in ("gguf-f16", "gguf-q8_0"):
        assert metrics["formats"][fmt]["tensors"] > 0
        assert (workdir / "exported" / fmt / "Modelfile").is_file()
    manifest = json.loads((workdir / "exported" / "manifest.json").read_text())
    assert set(manifest["formats"]) == {"onnx", "onnx-int8", "gguf-f16", "gguf-q8_0"}


def test_an_adapter_is_merged_on_demand_into_the_export_run(workdir: Path) -> None:
    """train.merge is off by default: export merges the adapter into its own run dir, says so, and exports it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cli("export", "--model", "adapter", "-f", "onnx", "--output", "from-adapter", "--set", "export.speed=false",
        cwd=workdir)
    run = workdir / "from-adapter"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["merged_model"] == "merged" and manifest["adapter"] == str((workdir / "adapter").resolve())
    assert manifest["source_model"] == str((run / "merged").resolve())  # the path after publishing, not .partial
    assert "adapter" in [Path(p["path"]).name for p in manifest["parents"]]
    assert json.loads((run / "metrics.json").read_text())["formats"]["onnx"]["passed"] is True
    train = json.loads((workdir / "adapter" / "manifest.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(train["base_model"], dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(workdir / "adapter" / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(run / "merged"), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-5)  # merged == adapter output


def test_tensorrt_without_cuda_is_a_clear_error(tiny_model_dir: Path, workdir: Path) -> None:
    out = cli("export", "--model", str(tiny_model_dir), "-f", "tensorrt-fp16", "--output", "trt", cwd=workdir,
              check=False)
    assert out.returncode == 2 and "CUDA" in out.stdout + out.stderr
    assert not (workdir / "trt").exists()
