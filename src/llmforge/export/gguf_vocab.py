"""A Hugging Face tokenizer as GGUF stores it, for llama.cpp: `gpt2` (byte-level BPE, with the name llama.cpp knows
its pre-tokenizer by, read off tokenizer.json's split regex) or `llama` (SentencePiece BPE, merged by score).

llama.cpp does not NFC-normalize text: a Qwen2 GGUF tokenizes NFC text as HF does, and decomposed text (rare:
most text is NFC already) differently. A SentencePiece BPE tokenizer.json (byte fallback, `▁` put in by its
normalizer) is written without merges: llama.cpp merges by score, and the scores follow HF's vocab order, which is
its merge order. Other tokenizers (Gemma's, Metaspace pre-tokenizers) are refused, naming llama.cpp's converter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.errors import LlmforgeError, require

# llama.cpp's name for the GPT-2 byte-level regex (llama-vocab.cpp maps "gpt-2" to LLAMA_VOCAB_PRE_TYPE_GPT2).
GPT2_PRE_TOKENIZER = "gpt-2"
# The split regexes of HF tokenizer.json (a `Split` before a regex-free `ByteLevel`) -> llama.cpp's names for them.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")  # one digit at a time
SPLIT_PRE_TOKENIZERS = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}
# llama.cpp turns ignore_merges on for llama-bpe (a word that is in the vocab is one token, merges or not).
IGNORES_MERGES = ("llama-bpe",)
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass(frozen=True)
class Vocab:
    """A byte-level BPE vocabulary as GGUF stores it."""

    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    merges: list[str]  # "left right", by rank
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    pre: str = GPT2_PRE_TOKENIZER  # llama.cpp's pre-tokenizer name ("" for SentencePiece)
    model: str = "gpt2"  # llama.cpp's tokenizer model: gpt2 (byte-level BPE) or llama (SentencePiece)
    scores: list[float] | None = None  # SentencePiece: a higher score merges first

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.tokens[self.eos_id]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def is_sentencepiece(tok: dict[str, Any]) -> bool:
    """A SentencePiece BPE model as tokenizer.json writes it (Llama 2, Mistral v0.1/v0.2): BPE with byte fallback,
    the `▁` word marker put in by a Prepend + Replace normalizer, no pre-tokenizer. What llama.cpp's 'llama'
    tokenizer does (with add_space_prefix)."""
    model, norm = tok.get("model", {}), tok.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else []
    return (model.get("type") == "BPE" and bool(model.get("byte_fallback")) and not model.get("ignore_merges")
            and tok.get("pre_tokenizer") is None
            and [(n.get("type"), n.get("prepend") or (n.get("pattern") or {}).get("String"), n.get("content"))
                 for n in steps] == [("Prepend", "▁", None), ("Replace", " ", "▁")])


def tokenizer_pre(tok: dict[str, Any], where: Path) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json whose splitting it reproduces exactly:
    GPT-2's ByteLevel regex ('gpt-2'), or a Split with Llama 3's ('llama-bpe') or Qwen2's ('qwen2') regex."""
    model, pre = tok.get("model", {}), tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    normalizer = tok.get("normalizer")
    byte_level = model.get("type") == "BPE" and not model.get("byte_fallback")
    last = steps[-1] if steps else {}
    if byte_level and last.get("type") == "ByteLevel" and not last.get("add_prefix_space"):
        if len(steps) == 1 and last.get("use_regex", True) and normalizer is None and not model.get("ignore_merges"):
            return GPT2_PRE_TOKENIZER
        split = steps[0] if len(steps) == 2 else {}
        name = SPLIT_PRE_TOKENIZERS.get((split.get("pattern") or {}).get("Regex", ""))
        if (split.get("type") == "Split" and name and not last.get("use_regex", True)
                and split.get("behavior") == "Isolated" and not split.get("invert")
                and normalizer in (None, {"type": "NFC"})
                and bool(model.get("ignore_merges")) == (name in IGNORES_MERGES)):
            return name
    kind = "SentencePiece-style (byte fallback)" if model.get("byte_fallback") else "this"
    raise LlmforgeError(
        f"{where}: GGUF export writes byte-level BPE tokenizers with the GPT-2, Llama 3 or Qwen2 pre-tokenizer; "
        f"{kind} tokenizer differs. Use llama.cpp's convert_hf_to_gguf.py, which knows more tokenizers"
    )


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """Tokens, token types, merges, special ids, add_bos/eos behaviour and chat template from a HF tokenizer."""
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise LlmforgeError(f"{model_dir} holds no tokenizer.json; save the tokenizer with the model")
    tok = read_json(tok_path)
    spm = is_sentencepiece(tok)
    pre = "" if spm else tokenizer_pre(tok, tok_path)
    tokens, types = _token_table(tok, vocab_size, tok_path)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    tok_config = read_json(model_dir / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    bos_id, eos_id, pad_id = (ids.get(_token_str(tok_config.get(k))) for k in ("bos_token", "eos_token", "pad_token"))
    add_bos, add_eos = _adds_specials(tok_path, bos_id, eos_id)
    if spm:  # no merges: llama.cpp merges by score; HF's merge order is its vocab order (later = merged later)
        token_type = require("gguf", "gguf").TokenType
        types = [int(token_type.BYTE) if _BYTE_TOKEN.fullmatch(t) else kind for t, kind in zip(tokens, types)]
        scores = [-float(i) if kind == int(token_type.NORMAL) else -1000.0 for i, kind in enumerate(types)]
        return Vocab(tokens, types, [], bos_id, eos_id, pad_id, add_bos, add_eos, _chat_template(model_dir, tok_config),
                     pre, "llama", scores)
    return Vocab(tokens, types, merges, bos_id, eos_id, pad_id, add_bos, add_eos, _chat_template(model_dir, tok_config),
                 pre)


def _token_table(tok: dict[str, Any], vocab_size: int, where: Path) -> tuple[list[str], list[int]]:
    """Token strings and GGUF token types by id; specials are CONTROL so llama.cpp parses them as one token."""
    token_type = require("gguf", "gguf").TokenType
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= vocab_size:
        raise LlmforgeError(f"{where}: token id {max(by_id)} does not fit the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may have more rows than the tokenizer has tokens
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        if i not in by_id:
            types.append(int(token_type.UNUSED))
        elif i in added:
            types.append(int(token_type.CONTROL if added[i].get("special") else token_type.USER_DEFINED))
        else:
            types.append(int(token_type.NORMAL))
    return tokens, types


def _token_str(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _adds_specials(tok_path: Path, bos_id: int | None, eos_id: int | None) -> tuple[bool, bool]:
    """Whether HF encoding prepends bos / appends eos: read off the post-processor by encoding a sample."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tok_path)).encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == bos_id, bool(ids) and ids[-1] == eos_id and bos_id != eos_id


def _chat_template(model_dir: Path, tok_config: dict[str, Any]) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = tok_config.get("chat_template")
    return template if isinstance(template, str) else None
