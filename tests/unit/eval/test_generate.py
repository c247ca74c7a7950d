from __future__ import annotations

import json
from pathlib import Path

from llmforge.config import ModelConfig
from llmforge.data.config import DataConfig, SplitConfig
from llmforge.eval.config import EvalConfig, EvalOptions
from llmforge.eval.runner import evaluate
from llmforge.metrics.generate import Decoding, generate_batch, split_prompt
from llmforge.prepare.config import PrepareConfig
from llmforge.prepare.runner import prepare
from llmforge.ui import show_metrics
from tests.helpers import qa_records, write_jsonl

IGN = -100


def test_split_prompt_takes_first_trained_run_without_eos() -> None:
    prompt, reference = split_prompt([1, 2, 3, 4, 5, 9, 6], [IGN, IGN, IGN, 4, 5, 9, IGN], eos_id=9)
    assert prompt == [1, 2, 3] and reference == [4, 5]


def test_batched_greedy_equals_one_by_one(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompts = [[1, 40, 41, 42, 43, 44], [1, 50, 51], [1, 60, 61, 62, 63]]
    decoding = Decoding(max_new_tokens=6)
    batched = generate_batch(model, tokenizer, prompts, decoding)
    alone = [generate_batch(model, tokenizer, [p], decoding)[0] for p in prompts]
    assert batched == alone


def test_eval_with_generation_writes_samples(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(40))
    prepare(PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                          data=DataConfig(path=[str(data)], split=SplitConfig(validation=0, test=0.5)),
                          output_dir=tmp_path / "prep"))
    cfg = EvalConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=tmp_path / "prep",
                     eval=EvalOptions(generate_samples=5, max_new_tokens=4, syntax="python"),
                     output_dir=tmp_path / "eval")
    metrics = evaluate(cfg).metrics
    assert metrics["generated_samples"] == 5
    assert 0 <= metrics["rouge1"] <= 1 and 0 <= metrics["syntax_valid"] <= 1
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("bertscore_precision", "bertscore_recall", "bertscore_f1", "coherence", "coherence_samples"):
        assert key in metrics and key in written  # BERTScore and coherence beside ROUGE
    assert 0 <= metrics["bertscore_f1"] <= 1 and 0 <= metrics["coherence_samples"] <= 5
    assert metrics["coherence"] is None or -1 <= metrics["coherence"] <= 1
    samples = [json.loads(x) for x in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and all(s["prompt"].endswith("assistant\n") for s in samples)
    assert all("coherence" in s for s in samples)
    show_metrics("evaluation", metrics, tmp_path / "eval")  # the table `llmforge eval` prints
    printed = capsys.readouterr().out
    assert "rougeL" in printed and "bertscore_f1" in printed and "coherence" in printed
    assert all(s["reference"] and s["generated_tokens"] <= 4 for s in samples)


def test_lm_eval_harness_runs_offline_task(tiny_model_dir: Path, monkeypatch) -> None:
    import pytest

    pytest.importorskip("lm_eval", reason="the 'lmeval' extra is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.eval.harness import run_harness

    root = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(root)  # the shipped task reads configs/lm-eval/*.jsonl relative to the repo root
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    scores = run_harness(model, tokenizer, ["llmforge_stdlib_code"], root / "configs" / "lm-eval", limit=3)
    result = scores["llmforge_stdlib_code"]
    assert result["word_perplexity,none"] > 1 and result["bits_per_byte,none"] > 0
