"""ONNX export: the exported graph computes what PyTorch computes, with and without the KV cache, and so do its
int8 variants (approximately); the parity helpers report what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.export.onnx import export_onnx, quantize_onnx_int8, quantize_onnx_q8, quantize_onnx_static  # noqa: E402
from llmforge.export.parity import PARITY_TEXTS, greedy_parity, logits_parity, tokenization_parity  # noqa: E402
from llmforge.models.ort import OrtCausalLM  # noqa: E402
from llmforge.models.reference import resolve_ref  # noqa: E402
from tests.helpers import corpus  # noqa: E402

PROMPTS = ["alpha beta gamma", "def return class import print value list dict omega",
           "héllo wörld ✓ 日本語 🙂 sigma"]


@pytest.fixture(scope="module")
def hf(sharp_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # At the default init (std 0.02) greedy decoding repeats one token whatever the context, which would let a
    # broken cache pass; the sharp model's larger weights make every next token depend on the context (and eos
    # does come). tests/conftest.py builds it, and exports it (`sharp_onnx_dir`, with export_onnx's facts checked).
    model = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(sharp_model_dir))


@pytest.fixture(scope="module")
def onnx_dir(sharp_onnx_dir: Path) -> Path:
    return sharp_onnx_dir  # read-only here: quantized variants are written under each test's tmp_path


@pytest.fixture(scope="module")
def ort_fp32(onnx_dir: Path) -> OrtCausalLM:
    return OrtCausalLM.load(onnx_dir, threads=1)


@pytest.fixture(scope="module")
def prompt_ids(hf) -> list[list[int]]:
    return [hf[1](p)["input_ids"] for p in PROMPTS]


def hf_logits(model):
    def run(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0]  # (T, V)
    return run


def hf_greedy(model, eos: int):
    def run(ids: list[int], n: int) -> list[int]:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        new = out[0, len(ids):].tolist()
        return new[: new.index(eos) + 1] if eos in new else new
    return run


def test_export_dir_describes_itself(onnx_dir: Path, hf) -> None:
    model, tokenizer = hf
    config = json.loads((onnx_dir / "onnx_config.json").read_text())
    assert (config["num_layers"], config["num_kv_heads"], config["head_dim"]) == (2, 2, 16)
    assert config["dtype"] == "float32" and config["quantization"] is None and config["opset"] >= 17
    assert list(config["inputs"])[:4] == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key"]
    assert config["outputs"]["present.1.value"]["shape"] == ["batch", 2, "past_sequence + sequence", 16]
    # Weights live in the external data file; the graph file itself stays small.
    assert (onnx_dir / "model.onnx_data").stat().st_size > 4 * model.num_parameters() * 0.9
    assert (onnx_dir / "model.onnx").stat().st_size < (onnx_dir / "model.onnx_data").stat().st_size / 4
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (onnx_dir / name).is_file()


def test_full_sequence_logits_match_pytorch(hf, ort_fp32: OrtCausalLM, prompt_ids: list[list[int]]) -> None:
    report = logits_parity(hf_logits(hf[0]), lambda ids: ort_fp32.logits([ids]), prompt_ids)
    assert report["max_abs_logits_diff"] < 1e-3
    assert report["top1_agreement"] == 1.0


def test_incremental_decoding_with_cache_matches_pytorch(hf, ort_fp32: OrtCausalLM,
                                                         prompt_ids: list[list[int]]) -> None:
    ids = prompt_ids[1]  # prefill 4 tokens from an empty past, then one token at a time through the cache
    full = hf_logits(hf[0])(ids).numpy()  # (T, V)
    logits, past = ort_fp32.forward(np.array([ids[:4]]), np.ones((1, 4), dtype=np.int64))
    assert past[0].shape == (1, 2, 4, 16)
    steps = [logits[0]]
    for t in range(4, len(ids)):
        logits, past = ort_fp32.forward(np.array([[ids[t]]]), np.ones((1, t + 1), dtype=np.int64), past)
        steps.append(logits[0])
    assert past[-1].shape == (1, 2, len(ids), 16)
    np.testing.assert_allclose(np.concatenate(steps), full, atol=1e-3)


def test_greedy_matches_hf_generate_for_a_ragged_batch(hf, ort_fp32: OrtCausalLM,
                                                       prompt_ids: list[list[int]]) -> None:
    model, tokenizer = hf
    free = [hf_greedy(model, tokenizer.eos_token_id)(ids, 20) for ids in prompt_ids]
    assert len({len(ids) for ids in prompt_ids}) == 3 and all(len(set(row)) > 5 for row in free)
    stop = free[1][8]  # a token the second prompt emits mid-way plays eos: rows must stop one by one
    reference = hf_greedy(model, stop)
    expected = [reference(ids, 20) for ids in prompt_ids]
    assert len(expected[1]) <= 9 and max(len(row) for row in expected) == 20
    # One left-padded batch of three prompts of different lengths, against HF run on each prompt alone.
    assert ort_fp32.generate(prompt_ids, 20, eos_token_id=stop) == expected
    report = greedy_parity(reference, lambda ids, n: ort_fp32.generate([ids], n, eos_token_id=stop)[0],
                           prompt_ids, 20)
    assert report["greedy_identical"] and report["greedy_tokens_compared"] == sum(map(len, expected))


def test_left_padding_changes_nothing_for_real_tokens(ort_fp32: OrtCausalLM, prompt_ids: list[list[int]]) -> None:
    short, long = prompt_ids[0], prompt_ids[1]
    pad = len(long) - len(short)
    ids = np.array([[0] * pad + short, long])  # (2, T), the first row left-padded
    mask = np.array([[0] * pad + [1] * len(short), [1] * len(long)])
    logits, present = ort_fp32.forward(ids, mask)
    assert all(np.isfinite(p).all() for p in present)  # fully masked pad rows must not poison the cache
    np.testing.assert_allclose(logits[0, pad:], ort_fp32.logits([short])[0], atol=1e-4)
    np.testing.assert_allclose(logits[1], ort_fp32.logits([long])[0], atol=1e-4)


def test_single_token_prompt_and_zero_new_tokens(hf, ort_fp32: OrtCausalLM) -> None:
    model, tokenizer = hf  # batch 1, sequence 1, past 0: sizes the exporter traced as symbolic must all work
    assert ort_fp32.generate([[7]], 6)[0] == hf_greedy(model, tokenizer.eos_token_id)([7], 6)
    assert ort_fp32.generate([[7], [8, 9]], 0) == [[], []]


def test_sampling_is_seeded_and_stays_in_vocab(ort_fp32: OrtCausalLM, prompt_ids: list[list[int]]) -> None:
    a = ort_fp32.generate(prompt_ids[:2], 8, temperature=1.0, top_p=0.9, seed=3)
    assert a == ort_fp32.generate(prompt_ids[:2], 8, temperature=1.0, top_p=0.9, seed=3)
    assert all(0 <= t < ort_fp32.config["vocab_size"] for row in a for t in row)


def test_exported_tokenizer_encodes_like_the_original(hf, onnx_dir: Path) -> None:
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(str(onnx_dir))
    report = tokenization_parity(hf[1].encode, exported.encode)
    assert report["tokenization_identical"] and report["identical"] == len(PARITY_TEXTS)


@pytest.mark.parametrize(("kind", "method"), [("dynamic", "int8-dynamic"), ("static", "int8-static-qdq"),
                                              ("q8", "int8-block32")])
def test_int8_variants_run_smaller_and_close(onnx_dir: Path, ort_fp32: OrtCausalLM, prompt_ids: list[list[int]], hf,
                                             tmp_path: Path, kind: str, method: str) -> None:
    if kind == "dynamic":
        facts = quantize_onnx_int8(onnx_dir, tmp_path / kind)
    elif kind == "q8":
        facts = quantize_onnx_q8(onnx_dir, tmp_path / kind)
        assert resolve_ref(str(tmp_path / kind)).format == "onnx-q8"
    else:
        facts = quantize_onnx_static(onnx_dir, tmp_path / kind, [hf[1](text)["input_ids"] for text in corpus(8)])
    assert facts["bytes"] < facts["source_bytes"] / (2 if kind == "q8" else 2.5)  # q8 keeps the embedding fp32
    int8 = OrtCausalLM.load(tmp_path / kind, threads=1)
    assert int8.config["quantization"]["method"] == method
    report = logits_parity(lambda ids: ort_fp32.logits([ids]), lambda ids: int8.logits([ids]), prompt_ids)
    # Logits here have std ~1.2: int8 moves them by ~0.07 on average and keeps >= 85% of the argmaxes.
    assert 0 < report["mean_abs_logits_diff"] < 0.15 and report["max_abs_logits_diff"] < 1.0
    assert report["top1_agreement"] >= 0.85
    assert [len(r) for r in int8.generate(prompt_ids, 5)] == [5, 5, 5]


def test_peft_model_is_refused(hf, tmp_path: Path) -> None:
    import copy

    from peft import LoraConfig, get_peft_model

    model, tokenizer = hf
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(LlmforgeError, match="llmforge merge"):
        export_onnx(peft_model, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_fp32_model_is_refused(hf, tmp_path: Path) -> None:
    import copy

    model, tokenizer = hf
    with pytest.raises(LlmforgeError, match="float32"):
        export_onnx(copy.deepcopy(model).to(torch.bfloat16), tokenizer, tmp_path / "out")


def test_parity_helpers_report_divergence() -> None:
    ref = lambda ids, n: [1, 2, 3, 4][:n]  # noqa: E731
    cand = lambda ids, n: [1, 2, 9, 4][:n]  # noqa: E731
    report = greedy_parity(ref, cand, [[0]], 4)
    assert report["greedy_identical"] is False
    assert report["first_divergence"] == {"prompt": 0, "position": 2, "reference": 3, "candidate": 9}
    short = greedy_parity(ref, lambda ids, n: [1, 2], [[0]], 4)  # stopped early (eos) where the reference did not
    assert short["first_divergence"] == {"prompt": 0, "position": 2, "reference": 3, "candidate": None}
    logits = np.array([[0.0, 1.0], [2.0, 0.0]])
    lp = logits_parity(lambda ids: logits, lambda ids: logits + [[-1.0, 0.0], [0.0, 3.0]], [[1, 0]])
    assert {k: lp[k] for k in ("max_abs_logits_diff", "mean_abs_logits_diff", "top1_agreement")} == \
        {"max_abs_logits_diff": 3.0, "mean_abs_logits_diff": 1.0, "top1_agreement": 0.5}
    # token 0 after token 1: p = 1 / (1 + e) under the reference, 1 / (1 + e^2) under the candidate
    assert lp["reference_perplexity"] == pytest.approx(1 + np.e)
    assert lp["perplexity_change"] == pytest.approx((1 + np.e ** 2) / (1 + np.e) - 1)
    tp = tokenization_parity(lambda s: [len(s)], lambda s: [len(s.strip())], ["a", " b"])
    assert tp["identical"] == 1 and tp["mismatches"] == [{"text": " b", "reference": [2], "candidate": [1]}]
    assert "<|im_start|>user\nhi<|im_end|>" in PARITY_TEXTS and any("🙂" in t for t in PARITY_TEXTS)
