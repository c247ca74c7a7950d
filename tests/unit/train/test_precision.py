"""`train.precision: auto` follows the CPU's bf16 instructions (llmforge.models.cpu) and the run records its choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.config import ModelConfig, TrainOptions
from llmforge.machine import Cpu
from llmforge.models import cpu
from llmforge.models.cpu import precision_for
from llmforge.models.loader import default_device
from llmforge.train.config import TrainConfig
from llmforge.train.runner import train, training_arguments


@pytest.mark.parametrize(("flags", "bf16"), [({"avx2", "amx_bf16", "avx512_bf16"}, True),
                                             ({"avx2", "avx512f", "avx512_bf16"}, True), ({"avx2"}, False)])
def test_auto_gives_the_trainer_bf16_autocast_only_where_the_cpu_has_it(
        flags: set[str], bf16: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if default_device().type != "cpu":
        pytest.skip("the CPU rule; CUDA picks bf16/fp16 by the GPU")
    monkeypatch.setattr(cpu, "detect", lambda: Cpu("test CPU", frozenset(flags), cores=2))
    args = training_arguments(TrainOptions(), tmp_path, has_eval=False)
    assert args.bf16 is bf16 and not args.fp16 and args.use_cpu


def test_a_run_records_its_precision_threads_and_machine(tiny_model_dir: Path, prepared: Path,
                                                         tmp_path: Path) -> None:
    from llmforge.artifacts import read_manifest

    options = TrainOptions(max_steps=2, batch_size=8, logging_steps=1)
    metrics = train(TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared, train=options,
                                output_dir=tmp_path / "run")).metrics
    expected = precision_for("auto", default_device())
    assert metrics["precision"] == expected.name and metrics["precision_reason"] == expected.reason
    assert metrics["threads"] == cpu.cpu_threads() and metrics["eval_loss"] > 0
    assert read_manifest(tmp_path / "run")["machine"]["cpu_flags"] is not None


@pytest.mark.parametrize("hooked", [True, False])
def test_under_bf16_autocast_a_small_lora_update_survives_only_with_the_fp32_sum(hooked: bool) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from llmforge.train.methods import adapter_sums_in_fp32

    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(256, 256)), LoraConfig(r=4, target_modules=["0"]))
    layer = model.base_model.model[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=1e-3)  # a young adapter: its update is small
    x = torch.randn(8, 256)
    with torch.no_grad():
        update = layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]  # fp32 reference
    assert (update.abs().mean() / layer.base_layer(x).abs().mean()) < 0.01
    if hooked:
        assert adapter_sums_in_fp32(model) == 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        with model.disable_adapter():
            base = model(x)
    error = ((out.float() - base.float()) - update).abs().mean() / update.abs().mean()
    if hooked:  # the update itself is computed in bf16 (2^-9 relative), nothing else is lost
        assert out.dtype == torch.float32 and error < 0.02
    else:  # rounded into the bf16 output: the update is mostly lost (the reason for the hook)
        assert out.dtype == torch.bfloat16 and error > 0.15
