"""Preference training (DPO, ORPO, KTO) through TRL on the tiny model: the held-out margin, the reference model
with LoRA, resume and the errors a user meets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from llmforge.config import ModelConfig, TrainOptions
from llmforge.data.splits import load_split
from llmforge.errors import LlmforgeError
from llmforge.metrics.preference import completion_logps, preference_rows
from llmforge.models.loader import load_model
from llmforge.progress import Hooks
from llmforge.train.config import TrainConfig
from llmforge.train.runner import train
from tests.helpers import WORDS, write_jsonl

pytest.importorskip("trl")


def preference_records(n: int = 80) -> list[dict]:
    """A preference a tiny model learns in a few steps: the chosen answer reverses the prompt's (Greek) words, the
    rejected one answers with code words."""
    rng = random.Random(2)
    greek, code = WORDS[:24], WORDS[24:]
    out = []
    for _ in range(n):
        words = rng.sample(greek, 4)
        out.append({"prompt": "reverse: " + " ".join(words), "chosen": " ".join(reversed(words)),
                    "rejected": " ".join(rng.sample(code, 4))})
    return out


@pytest.fixture(scope="module")
def pairs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    root = tmp_path_factory.mktemp("pairs")
    data = write_jsonl(root / "pairs.jsonl", preference_records())
    cfg = PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                        data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.2, test=0)),
                        output_dir=root / "prep")
    return prepare(cfg).output_dir


def _cfg(model: Path, data: Path, out: Path, **opts) -> TrainConfig:
    options = TrainOptions(**{"method": "dpo", "batch_size": 8, "logging_steps": 2, "precision": "fp32", **opts})
    return TrainConfig(model=ModelConfig(name_or_path=str(model)), data=data, train=options, output_dir=out)


def _held_out(model_path: Path, pairs: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model, tokenizer = load_model(ModelConfig(name_or_path=str(model_path), dtype="float32"))
    return completion_logps(model, tokenizer, preference_rows(load_split(pairs, "validation"), tokenizer))


def test_dpo_raises_the_held_out_margin(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    metrics = train(_cfg(tiny_model_dir, pairs, tmp_path / "run", max_steps=16, learning_rate=1e-2)).metrics
    assert metrics["eval_pairs"] == 16 and metrics["train_steps"] == 16
    assert metrics["eval_reward_accuracy"] >= 0.9 and metrics["eval_reward_margin"] > 0.2
    chosen, rejected = _held_out(tiny_model_dir, pairs)
    before = float((chosen - rejected).mean())
    assert metrics["eval_logp_margin_before"] == pytest.approx(before, abs=1e-4)
    chosen, rejected = _held_out(tmp_path / "run", pairs)  # the saved adapter, reloaded
    after = float((chosen - rejected).mean())
    assert after == pytest.approx(metrics["eval_logp_margin"], abs=1e-3)
    assert after > before + 2  # measured: 0.008 -> 3.5 nats
    # the implicit reward margin is beta * (margin after - margin before): the reference is the model before training
    assert metrics["eval_reward_margin"] == pytest.approx(0.1 * (after - before), rel=1e-3)


@pytest.mark.parametrize("weights", ["lora", "full"])
def test_reference_model_with_lora_is_the_adapter_disabled(weights: str, tiny_model_dir: Path, pairs: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With LoRA the model is never copied: TRL gets the plain model and a peft_config, keeps no ref_model and no
    'ref' adapter, and the reference log-probabilities are the model's with the adapter disabled."""
    import trl.trainer.dpo_trainer as dpo

    from llmforge.train import runner

    made: list[str] = []
    create = dpo.create_model_from_path
    monkeypatch.setattr(dpo, "create_model_from_path", lambda path, **kw: made.append(path) or create(path, **kw))
    trainers = []
    build = runner.preference_trainer
    monkeypatch.setattr(runner, "preference_trainer", lambda *a, **kw: trainers.append(build(*a, **kw)) or trainers[-1])
    options = {"preference": {"weights": weights}, "max_steps": 3, "learning_rate": 1e-2}
    train(_cfg(tiny_model_dir, pairs, tmp_path / "run", **options))
    trainer = trainers[0]
    if weights == "full":  # the reference is a frozen copy: TRL loads it
        assert trainer.ref_model is not None and len(made) == 1
        return
    assert trainer.ref_model is None and made == []
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert set(model.peft_config) == {"default"}
    assert not (tmp_path / "run" / "adapter" / "ref").exists()
    base, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    rows = preference_rows(load_split(pairs, "validation"), tokenizer)
    reference = completion_logps(base, tokenizer, rows)
    with model.disable_adapter():
        disabled = completion_logps(model, tokenizer, rows)
    trained = completion_logps(model, tokenizer, rows)
    for ref, off, on in zip(reference, disabled, trained):
        torch.testing.assert_close(off, ref, rtol=1e-5, atol=1e-4)
        assert not torch.allclose(on, ref, atol=1e-3)  # the adapter did train


@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_orpo_and_kto_run_end_to_end(method: str, tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    from llmforge.artifacts import read_manifest

    metrics = train(_cfg(tiny_model_dir, pairs, tmp_path / "run", method=method, max_steps=1)).metrics
    assert metrics["train_steps"] == 1 and metrics["eval_pairs"] == 16
    assert metrics["train_tokens"] > 0 and metrics["train_tokens_per_second"] > 0  # ORPO's counted by its subclass
    assert 0 <= metrics["eval_reward_accuracy"] <= 1 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    manifest = read_manifest(tmp_path / "run")
    assert (manifest["method"], manifest["weights"], manifest["adapter_dir"]) == (method, "lora", "adapter")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_dpo_resume_after_crash_equals_uninterrupted_run(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class _Crash(Exception):
        pass

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise _Crash("simulated crash at step 5")

    opts = {"max_steps": 6, "save_steps": 3, "learning_rate": 1e-2}
    whole = train(_cfg(tiny_model_dir, pairs, tmp_path / "whole", **opts)).metrics
    cfg = _cfg(tiny_model_dir, pairs, tmp_path / "crashed", **opts)
    with pytest.raises(_Crash):
        train(cfg, Hooks(train_callbacks=lambda: [Crash()]))
    assert not (tmp_path / "crashed").exists()
    resumed = train(cfg, resume=True).metrics
    assert resumed["train_steps"] == whole["train_steps"]
    assert resumed["eval_reward_margin"] == pytest.approx(whole["eval_reward_margin"], rel=1e-4)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "adapter" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_non_finite_dpo_loss_stops_with_clear_message(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    cfg = _cfg(tiny_model_dir, pairs, tmp_path / "nan", max_steps=8, save_steps=2, logging_steps=2)
    with pytest.raises(LlmforgeError, match=r"(loss became nan|weights became non-finite).*last good checkpoint "
                                            r".*checkpoint-2\b"):
        train(cfg, Hooks(train_callbacks=lambda: [Poison()]))
    assert not (tmp_path / "nan").exists()


def test_method_and_data_kind_must_match(tiny_model_dir: Path, pairs: Path, prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="train.method=dpo needs preference pairs.*holds samples"):
        train(_cfg(tiny_model_dir, prepared, tmp_path / "a", max_steps=1))
    with pytest.raises(LlmforgeError, match="holds preference pairs: use train.method dpo, orpo or kto"):
        train(_cfg(tiny_model_dir, pairs, tmp_path / "b", method="lora", max_steps=1))


def test_missing_trl_names_the_extra(tiny_model_dir: Path, pairs: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "trl", None)
    with pytest.raises(LlmforgeError, match=r"pip install 'llmforge\[pref\]'"):
        train(_cfg(tiny_model_dir, pairs, tmp_path / "run", max_steps=1))


def test_prompt_keeps_one_bos(tiny_model_dir: Path, pairs: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    raw = load_split(pairs, "train")
    assert raw[0]["prompt"].startswith(tokenizer.bos_token)  # the template wrote it
    ids = tokenizer(preference_rows(raw, tokenizer)[0]["prompt"])["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id


@pytest.mark.parametrize("weights", ["lora", "full"])
def test_dry_run_memory_is_within_25_percent_of_a_measured_dpo_run(weights: str, tiny_model_dir: Path, pairs: Path,
                                                                    tmp_path: Path) -> None:
    """The preference dry run against the live tensor bytes of the run it estimates (tests/unit/train/test_memory.py's
    tracker): chosen and rejected rows at the longest pair, TRL's full-logit loss; `full` adds the reference copy,
    which exists before training starts and so is not among the tracked bytes."""
    from llmforge.train.estimate import estimate
    from tests.unit.train.test_memory import Measure

    cfg = _cfg(tiny_model_dir, pairs, tmp_path / "run", max_steps=3, batch_size=16, preference={"weights": weights})
    predicted = estimate(cfg, measured_steps=1)
    memory = predicted["memory_bytes"]
    assert ("reference" in memory) == (weights == "full") and predicted["steps_per_epoch"] == 4  # 64 pairs / 16
    assert predicted["measured_steps"] == 1 and predicted["seconds_per_step"] > 0
    measure = Measure()
    train(cfg, Hooks(train_callbacks=lambda: [measure]))
    tensors = memory["total"] - memory["runtime"] - memory.get("reference", 0)
    assert tensors == pytest.approx(measure.mode.peak, rel=0.25), (memory, measure.mode.peak)
