"""Parity checks between a reference model (PyTorch/HF) and an exported one (ONNX, GGUF, ...): pure functions.

Each check takes plain callables, so any format plugs in:
  logits_fn(ids: list[int]) -> array-like (T, V)         full-sequence logits of one prompt, no cache
  generate_fn(ids: list[int], n: int) -> list[int]       up to n greedy new tokens of one prompt (eos may end it)
  encode_fn(text: str) -> list[int]                      token ids of one text
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llmforge.errors import LlmforgeError

LogitsFn = Callable[[list[int]], Any]
GenerateFn = Callable[[list[int], int], list[int]]
EncodeFn = Callable[[str], list[int]]

# Non-Latin scripts and emoji, where byte-level BPE, normalizers and pre-tokenizer regexes (\p{L}, \p{N}, \p{M})
# differ most between implementations: Han, kana (incl. half-width), Hangul, Arabic (RTL, harakat, Arabic-Indic
# digits, mixed with LTR), Devanagari (virama conjuncts, nukta, vowel signs), Cyrillic, and emoji built of several
# code points (ZWJ sequences, skin tones, VS16, flags, keycaps). All NFC already: llama.cpp applies no normalizer,
# so text a tokenizer NFC-normalizes (Qwen2) tokenizes differently there when it is not NFC (conjoining jamo);
# tests/unit/export/test_gguf_families.py pins that.
MULTILINGUAL_TEXTS: list[str] = [
    "中文：你好，世界！我们今天学习机器学习。",
    "日本語：ひらがな、カタカナ、漢字。ｶﾀｶﾅ半角も「かぎ括弧」",
    "한국어: 안녕하세요, 세계! 다람쥐 헌 쳇바퀴에 타고파",
    "العربية: مَرْحَبًا بِالْعَالَمِ! هذا نصٌّ من اليمين إلى اليسار ١٢٣",
    "mixed RTL: السعر 42 دولار (price) و ok",
    "हिन्दी: नमस्ते दुनिया! क्षत्रिय, ज़िंदगी, श्रृंखला ॐ १२३",
    "Русский: съешь же ещё этих мягких французских булок",
    "emoji: 👩🏽\u200d💻 🧑\u200d🤝\u200d🧑 🏳️\u200d🌈 👋🏿 ❤️\u200d🔥 1️⃣ 🇯🇵🇮🇳",
]

PARITY_TEXTS: list[str] = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand   runs    of     spaces",
    "café naïve résumé Ångström façade",
    "Größe, Straße, ĳ, œuvre, Ελληνικά, русский текст",
    "日本語のテキストと中文文本，한국어도 있습니다。",
    "emoji: 🙂 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✓",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # comment\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "numbers 0 1 12 123 1234 3.14159 -42 1e-9 2026-11-29",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<s>bos inside text</s> and <|pad|> too",
    "https://example.com/path?q=a&b=c#frag user@example.com",
    "\u00a0non-breaking\u200bzero-width\u3000ideographic space",
    *MULTILINGUAL_TEXTS,
    "",
]


def _as_2d(logits: Any, length: int) -> np.ndarray:
    arr = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64)
    if arr.size % length:
        raise LlmforgeError(f"logits of shape {arr.shape} do not hold {length} positions")
    return arr.reshape(length, -1)  # (T, V)


def logits_parity(reference_logits_fn: LogitsFn, candidate_logits_fn: LogitsFn,
                  prompts_ids: Sequence[list[int]]) -> dict[str, float]:
    """Largest and mean |difference| of logits over every position of every prompt, top-1 agreement, and the
    teacher-forced perplexity of the prompts' own next tokens under each (their relative change)."""
    max_diff, total_diff, agree, positions, elements = 0.0, 0.0, 0, 0, 0
    nll_ref, nll_cand, predicted = 0.0, 0.0, 0
    for ids in prompts_ids:
        ref = _as_2d(reference_logits_fn(ids), len(ids))  # (T, V)
        cand = _as_2d(candidate_logits_fn(ids), len(ids))  # (T, V)
        if ref.shape != cand.shape:
            raise LlmforgeError(f"logits shapes differ: reference {ref.shape}, candidate {cand.shape}")
        diff = np.abs(ref - cand)
        max_diff = max(max_diff, float(diff.max()))
        total_diff += float(diff.sum())
        elements += diff.size
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        positions += len(ids)
        nll_ref += _next_token_nll(ref, ids)
        nll_cand += _next_token_nll(cand, ids)
        predicted += len(ids) - 1
    if not positions:
        raise LlmforgeError("logits parity needs at least one non-empty prompt")
    result = {"max_abs_logits_diff": max_diff, "mean_abs_logits_diff": total_diff / elements,
              "top1_agreement": agree / positions}
    if predicted:
        result["reference_perplexity"] = float(np.exp(nll_ref / predicted))
        result["perplexity"] = float(np.exp(nll_cand / predicted))
        result["perplexity_change"] = float(np.exp((nll_cand - nll_ref) / predicted)) - 1
    return result


def _next_token_nll(logits: np.ndarray, ids: list[int]) -> float:
    """Summed -log p(ids[t+1] | ids[:t+1]) from (T, V) logits."""
    shifted = logits[:-1] - logits[:-1].max(-1, keepdims=True)  # (T-1, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-log_probs[np.arange(len(ids) - 1), ids[1:]].sum())


def greedy_parity(ref_generate: GenerateFn, cand_generate: GenerateFn, prompts_ids: Sequence[list[int]],
                  n_tokens: int) -> dict[str, Any]:
    """Whether greedy continuations are token-for-token identical; where they first part if not."""
    compared, first = 0, None
    for index, ids in enumerate(prompts_ids):
        ref, cand = list(ref_generate(ids, n_tokens))[:n_tokens], list(cand_generate(ids, n_tokens))[:n_tokens]
        same = next((i for i, (a, b) in enumerate(zip(ref, cand)) if a != b), min(len(ref), len(cand)))
        compared += same + (same < max(len(ref), len(cand)))
        if first is None and (same < len(ref) or same < len(cand)):
            first = {"prompt": index, "position": same, "reference": ref[same] if same < len(ref) else None,
                     "candidate": cand[same] if same < len(cand) else None}
    return {"greedy_identical": first is None, "greedy_tokens_compared": compared, "first_divergence": first}


def tokenization_parity(hf_encode: EncodeFn, other_encode: EncodeFn,
                        texts: Sequence[str] = PARITY_TEXTS) -> dict[str, Any]:
    """How many texts encode to identical ids, with the first few mismatches shown."""
    mismatches = []
    for text in texts:
        ref, cand = list(hf_encode(text)), list(other_encode(text))
        if ref != cand:
            mismatches.append({"text": text, "reference": ref, "candidate": cand})
    return {"texts": len(texts), "identical": len(texts) - len(mismatches), "tokenization_identical": not mismatches,
            "mismatches": mismatches[:5]}
