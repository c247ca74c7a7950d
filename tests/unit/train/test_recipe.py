from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmforge.artifacts import read_manifest
from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.splits import load_split
from llmforge.metrics.score import score
from llmforge.models.loader import load_model
from llmforge.progress import Hooks
from llmforge.train.config import TrainConfig
from llmforge.train.runner import train


def _train(model: str, prepared: Path, out: Path, **opts) -> dict:
    options = TrainOptions(**{"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "logging_steps": 5, **opts})
    return train(TrainConfig(model=ModelConfig(name_or_path=model), data=prepared, train=options,
                             output_dir=out)).metrics


def _val_loss(model_path: str, prepared: Path) -> float:
    model, _ = load_model(ModelConfig(name_or_path=model_path))
    return score(model, load_split(prepared, "validation"))["loss"]


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_method_lowers_held_out_loss(method: str, tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    before = _val_loss(str(tiny_model_dir), prepared)
    lr = 3e-3 if method == "full" else 2e-2  # adapters on a random 64-wide model need a larger step
    metrics = _train(str(tiny_model_dir), prepared, tmp_path / "run", method=method, learning_rate=lr)
    assert metrics["eval_loss"] < 0.97 * before
    assert _val_loss(str(tmp_path / "run"), prepared) == pytest.approx(metrics["eval_loss"], rel=1e-5)
    for key in ("train_loss", "eval_perplexity", "train_tokens_per_second", "train_runtime_seconds",
                "peak_memory_bytes"):
        assert metrics[key] > 0
    manifest = read_manifest(tmp_path / "run")
    assert manifest["method"] == method
    assert (tmp_path / "run" / "loss_curve.png").exists()
    history = json.loads((tmp_path / "run" / "loss_curve.json").read_text())
    assert any("loss" in h for h in history)
    if method != "full":
        assert metrics["trainable_parameters"] < metrics["total_parameters"] / 3
        assert manifest["adapter_dir"] == "adapter" and manifest["model_dir"] is None


def test_merged_lora_equals_adapter(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    _train(str(tiny_model_dir), prepared, tmp_path / "run", method="lora", merge=True, epochs=1)
    manifest = read_manifest(tmp_path / "run")
    _assert_same_logits(tmp_path / "run" / "adapter", tmp_path / "run" / manifest["model_dir"])


def _assert_same_logits(a: Path, b: Path) -> None:
    first, _ = load_model(ModelConfig(name_or_path=str(a)))
    second, _ = load_model(ModelConfig(name_or_path=str(b)))
    ids = torch.tensor([[1, 5, 9, 30, 44, 2]])
    with torch.no_grad():
        torch.testing.assert_close(first(ids).logits, second(ids).logits, rtol=1e-4, atol=1e-4)


def test_packed_samples_do_not_attend_to_each_other(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    model.config.use_cache = False
    a, b = [1, 7, 8, 9, 10], [1, 20, 21, 22]
    batch = DataCollatorWithFlattening()([{"input_ids": a, "labels": a}, {"input_ids": b, "labels": b}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = torch.cat([model(torch.tensor([a])).logits, model(torch.tensor([b])).logits], dim=1)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


class _Crash(Exception):
    pass


def _crash_at(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Crash(f"simulated crash at step {step}")

    return Crash()


def test_resume_after_crash_equals_uninterrupted_run(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    opts = {"method": "lora", "epochs": 2, "save_steps": 3, "learning_rate": 1e-2}
    whole = _train(str(tiny_model_dir), prepared, tmp_path / "whole", **opts)
    cfg = TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                      train=TrainOptions(**{"batch_size": 8, "logging_steps": 5, **opts}),
                      output_dir=tmp_path / "crashed")
    with pytest.raises(_Crash):
        train(cfg, Hooks(train_callbacks=lambda: [_crash_at(7)]))
    assert not (tmp_path / "crashed").exists()  # nothing published
    resumed = train(cfg, resume=True).metrics
    assert resumed["train_steps"] == whole["train_steps"]
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-5)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "adapter" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_with_clear_message(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from llmforge.errors import LlmforgeError

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 4:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    cfg = TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                      train=TrainOptions(method="lora", max_steps=12, save_steps=2, logging_steps=2),
                      output_dir=tmp_path / "nan")
    with pytest.raises(LlmforgeError, match=r"(loss became nan|weights became non-finite).*at step \d+.*last good checkpoint .*checkpoint-2\b"):
        train(cfg, Hooks(train_callbacks=lambda: [Poison()]))
    assert not (tmp_path / "nan").exists()


def test_qlora_without_cuda_says_what_to_use(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from llmforge.errors import LlmforgeError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; QLoRA is tested in tests/gpu")
    cfg = TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                      train=TrainOptions(method="qlora", max_steps=1), output_dir=tmp_path / "q")
    with pytest.raises(LlmforgeError, match="needs a CUDA GPU.*train.method=lora"):
        train(cfg)


def test_dry_run_estimates_without_training(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from llmforge.train.estimate import estimate

    cfg = TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=prepared,
                      train=TrainOptions(method="lora", batch_size=4), output_dir=tmp_path / "never")
    est = estimate(cfg, measured_steps=2)
    assert 0 < est["trainable_parameters"] < est["total_parameters"]
    mem = est["memory_bytes"]
    assert mem["optimizer"] == 8 * est["trainable_parameters"]  # two fp32 AdamW moments
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    assert est["steps_per_epoch"] == -(-est["train_samples"] // 4) and est["seconds_per_epoch"] > 0
    assert not (tmp_path / "never").exists()


def test_merge_command_output_equals_adapter(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from llmforge.train.merge import merge

    _train(str(tiny_model_dir), prepared, tmp_path / "run", method="lora", epochs=1, learning_rate=2e-2)
    merge(tmp_path / "run", tmp_path / "merged")
    _assert_same_logits(tmp_path / "run", tmp_path / "merged")
    assert read_manifest(tmp_path / "merged")["parents"][0]["kind"] == "model"


def test_early_stopping_keeps_the_best_checkpoint(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    # a learning rate far too high makes eval loss rise after the first evaluations: patience 1 stops early
    metrics = _train(str(tiny_model_dir), prepared, tmp_path / "run", method="full", epochs=8, eval_steps=4,
                     early_stopping_patience=1, learning_rate=1e-1)
    history = json.loads((tmp_path / "run" / "loss_curve.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert metrics["train_steps"] < 8 * 16, evals  # stopped before the 8 epochs of 16 steps
    # ended on the best weights, not the last: (the Trainer's eval loss averages batch means, ours is
    # token-weighted, so compare with a tolerance far below the gap between best and last)
    assert evals[-1] - min(evals) > 0.05, evals
    assert metrics["eval_loss"] == pytest.approx(min(evals), abs=0.01)


def _mean_kl(teacher, student, dataset) -> float:
    from llmforge.metrics.tokens import kl_divergence

    total = 0.0
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"]])
            mask = torch.tensor([row["labels"]]) != -100
            total += kl_divergence(teacher(ids).logits, student(ids).logits, mask)
    return total / len(dataset)


def test_derived_student_is_a_smaller_copy_of_the_teacher(tiny_model_dir: Path, prepared: Path) -> None:
    from llmforge.train.distill import derive_student

    teacher, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    same = derive_student(teacher, layers=None, intermediate_size=None).eval()
    assert _mean_kl(teacher, same, load_split(prepared, "validation")) == pytest.approx(0.0, abs=1e-6)
    small = derive_student(teacher, layers=1, intermediate_size=128)
    assert small.config.num_hidden_layers == 1 and len(small.model.layers) == 1
    assert small.model.layers[0].mlp.up_proj.weight.shape == (128, 64)
    assert small.model.layers[0].mlp.down_proj.weight.shape == (64, 128)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_distilled_student_moves_toward_teacher(tiny_model_dir: Path, prepared: Path, tmp_path: Path) -> None:
    from llmforge.config import DistillOptions
    from llmforge.models.tiny import build_model

    _train(str(tiny_model_dir), prepared, tmp_path / "teacher", method="full", epochs=2)  # a non-uniform teacher
    teacher, tokenizer = load_model(ModelConfig(name_or_path=str(tmp_path / "teacher")))
    build_model(tokenizer, "test", seed=1).save_pretrained(str(tmp_path / "student0"))  # an explicit student
    tokenizer.save_pretrained(str(tmp_path / "student0"))
    val = load_split(prepared, "validation")
    student0, _ = load_model(ModelConfig(name_or_path=str(tmp_path / "student0")))
    before = _mean_kl(teacher, student0, val)
    distill = DistillOptions(teacher=str(tmp_path / "teacher"), alpha=1.0, temperature=2.0)
    _train(str(tmp_path / "student0"), prepared, tmp_path / "student", method="distill", distill=distill,
           epochs=3, learning_rate=3e-3)
    student, _ = load_model(ModelConfig(name_or_path=str(tmp_path / "student")))
    assert _mean_kl(teacher, student, val) < 0.7 * before


def test_distill_with_derived_student_saves_smaller_model(tiny_model_dir: Path, prepared: Path,
                                                          tmp_path: Path) -> None:
    from llmforge.config import DistillOptions

    distill = DistillOptions(teacher=str(tiny_model_dir), student_layers=1, student_intermediate_size=128)
    metrics = _train(str(tiny_model_dir), prepared, tmp_path / "s", method="distill", distill=distill, max_steps=3)
    student, _ = load_model(ModelConfig(name_or_path=str(tmp_path / "s")))
    assert student.config.num_hidden_layers == 1 and student.config.intermediate_size == 128
    assert metrics["total_parameters"] == sum(p.numel() for p in student.parameters())
    assert read_manifest(tmp_path / "s")["method"] == "distill"


def test_tune_records_every_trial(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="the 'tune' extra is not installed")
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.stages import PipelineConfig
    from llmforge.tune import SearchSpace, tune
    from tests.helpers import qa_records, write_jsonl

    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(60))
    cfg = PipelineConfig(output_dir=tmp_path / "out", model=ModelConfig(name_or_path=str(tiny_model_dir)),
                         data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.2, test=0.1)),
                         train=TrainOptions(method="lora", max_steps=2))
    result = tune(cfg, n_trials=2, space=SearchSpace(lora_r=[2, 4], epochs=[1]))
    assert len(result.trials) == 2 and all(t["state"] == "COMPLETE" for t in result.trials)
    assert result.best["eval_loss"] == min(t["eval_loss"] for t in result.trials)
    for t in result.trials:
        assert read_manifest(Path(t["run_dir"]))["method"] == "lora"
    assert json.loads((tmp_path / "out" / "tune" / "trials.json").read_text()) == result.trials
