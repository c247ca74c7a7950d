"""A Hugging Face tokenizer as GGUF stores it, for llama.cpp: `gpt2` (byte-level BPE, with the name llama.cpp knows
its pre-tokenizer by, read off tokenizer.json's split regex) or `llama` (SentencePiece BPE, merged by score).

llama.cpp does not NFC-normalize text: a Qwen2 GGUF tokenizes NFC text as HF does, and decomposed text (rare:
most text is NFC already) differently. A SentencePiece BPE tokenizer.json (byte fallback, `▁` for spaces put in by
its normalizer, with a `▁` prefix (Llama 2, Mistral, Phi-3) or without (Gemma)) is written without merges:
llama.cpp merges by score, and the scores follow HF's vocab order, which is its merge order. Other tokenizers
(unknown split regexes, other pre-tokenizers) are refused, naming llama.cpp's converter.

Mistral v0.3's tokenizer.json (no normalizer; a Metaspace pre-tokenizer, prepend_scheme "first") puts `▁` before
the start of the text only, and not where the text starts with a space; after a special token it puts none
("[INST] hi": `[INST]` `▁hi`; "[/INST]ok": `[/INST]` `ok`). llama.cpp cannot say that: with add_space_prefix on
(its default, which convert_hf_to_gguf.py's file keeps) it puts `▁` before the start and after every special token,
even before a space ("[INST] hi": `[INST]` `▁▁hi`, so every chat prompt differs); with it off, nowhere. Written with
it off, llama.cpp tokenizes as HF every text that begins with a special token or a space: every chat prompt of a
template that begins with one (bos, `[INST]`), which export requires of such a tokenizer. Plain text that begins
otherwise (a word, a newline) loses HF's leading `▁` ("Hello": HF `▁Hello`, llama.cpp `Hello`).

llama.cpp keeps no per-token lstrip/rstrip: it strips the whitespace after special tokens, as Phi-3's
tokenizer.json asks, only for models whose general.name says phi-3 (`gguf_name` writes the name accordingly).
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
# llama-vocab.cpp: a general.name containing "phi-3" or "phi3" (any case) makes every special token rstrip, except
# these, and `</s>` too; no other name strips anything around special tokens (outside a few encoder models).
_PHI3_NAME = re.compile(r"(phi)-?(3)", re.IGNORECASE)
_PHI3_KEEP = ("<unk>", "<s>", "<|endoftext|>")
USER_TURN = "\x00user-turn\x00"  # the content of the one user message a chat template is rendered with


@dataclass(frozen=True)
class Vocab:
    """A tokenizer as GGUF stores it."""

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
    add_space_prefix: bool = True  # SentencePiece: `▁` put before the text (not Gemma)
    chat_only: bool = False  # llama.cpp tokenizes as HF only text that begins with a special token (Mistral v0.3)
    unk_id: int | None = None
    eot_id: int | None = None  # the token that ends a chat turn where it is not eos (Gemma, Phi-3)
    rstrip_specials: bool = False  # special tokens eat the whitespace after them (Phi-3's tokenizer.json)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.tokens[self.eos_id]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def metaspace_first(tok: dict[str, Any]) -> bool:
    """Whether a tokenizer.json puts `▁` for spaces as Mistral v0.3's does: no normalizer, a Metaspace
    pre-tokenizer that prepends `▁` to the first piece of text only, and does not split on it."""
    pre = tok.get("pre_tokenizer") or {}
    want = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    return tok.get("normalizer") is None and {k: pre.get(k) for k in want} == want


def sentencepiece_prefix(tok: dict[str, Any]) -> bool | None:
    """For a SentencePiece BPE model as tokenizer.json writes it (BPE with byte fallback, spaces replaced by `▁` in
    the normalizer, no pre-tokenizer: what llama.cpp's 'llama' tokenizer does), whether the normalizer also puts a
    `▁` before the text (Llama 2, Mistral v0.1/v0.2, Phi-3: True; Gemma: False); False for Mistral v0.3's
    Metaspace (see the module's docstring). None for any other tokenizer."""
    model, norm = tok.get("model", {}), tok.get("normalizer") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or model.get("ignore_merges"):
        return None
    if tok.get("pre_tokenizer") is not None:
        return False if metaspace_first(tok) else None
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    kinds = [(n.get("type"), n.get("prepend") or (n.get("pattern") or {}).get("String"), n.get("content"))
             for n in steps]
    replace = ("Replace", " ", "▁")
    if kinds == [("Prepend", "▁", None), replace]:
        return True
    return False if kinds == [replace] else None


def tokenizer_pre(tok: dict[str, Any], where: Path, family: str) -> str:
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
    kind = "this SentencePiece-style (byte fallback)" if model.get("byte_fallback") else "this"
    raise LlmforgeError(
        f"{where}: GGUF export of {family} models writes byte-level BPE tokenizers with the GPT-2, Llama 3 or Qwen2 "
        f"pre-tokenizer, and SentencePiece BPE as Llama 2's and Gemma's tokenizer.json write it; {kind} "
        "tokenizer differs. Use llama.cpp's convert_hf_to_gguf.py, which knows more tokenizers"
    )


def read_vocab(model_dir: Path, vocab_size: int, family: str) -> Vocab:
    """Tokens, token types, merges, special ids, add_bos/eos behaviour and chat template from a HF tokenizer."""
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise LlmforgeError(f"GGUF export of {family} models needs tokenizer.json in {model_dir}; save the "
                            "tokenizer with the model")
    tok = read_json(tok_path)
    prefix = sentencepiece_prefix(tok)
    pre = "" if prefix is not None else tokenizer_pre(tok, tok_path, family)
    tokens, types = _token_table(tok, vocab_size, tok_path)
    tok_config = read_json(model_dir / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    bos_id, eos_id, unk_id, pad_id = (ids.get(_token_str(tok_config.get(f"{k}_token")))
                                      for k in ("bos", "eos", "unk", "pad"))
    add_bos, add_eos = _adds_specials(tok_path, bos_id, eos_id)
    template = _chat_template(model_dir, tok_config)
    chat_only = metaspace_first(tok)
    if chat_only:
        _require_special_start(template, tokens, types, bos_id, eos_id, tok_path, family)
    common: dict[str, Any] = dict(
        bos_id=bos_id, eos_id=eos_id, unk_id=unk_id, pad_id=pad_id, add_bos=add_bos, add_eos=add_eos,
        chat_template=template, eot_id=_end_of_turn(template, tokens, types, eos_id),
        rstrip_specials=_rstrips(tok, tokens, types, tok_path, family), chat_only=chat_only)
    if prefix is None:
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
        return Vocab(tokens, types, merges, pre=pre, **common)
    # no merges: llama.cpp merges by score; HF's merge order is its vocab order (later = merged later)
    token_type = require("gguf", "gguf").TokenType
    types = [int(token_type.BYTE) if _BYTE_TOKEN.fullmatch(t) else kind for t, kind in zip(tokens, types)]
    scores = [-float(i) if kind == int(token_type.NORMAL) else -1000.0 for i, kind in enumerate(types)]
    return Vocab(tokens, types, [], pre="", model="llama", scores=scores, add_space_prefix=prefix, **common)


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


def _rstrips(tok: dict[str, Any], tokens: list[str], types: list[int], where: Path, family: str) -> bool:
    """Whether the added tokens eat the whitespace after them as llama.cpp's Phi-3 rule does; refuse strips it
    cannot reproduce (lstrip, or an rstrip set other than Phi-3's)."""
    added = tok.get("added_tokens", [])
    if any(a.get("lstrip") for a in added):
        raise LlmforgeError(f"{where}: GGUF export of {family} models: tokens with lstrip are not reproduced by "
                            "llama.cpp for this model; use llama.cpp's convert_hf_to_gguf.py or ONNX (-f onnx)")
    rstrip = {a["id"] for a in added if a.get("rstrip")}
    if not rstrip:
        return False
    token_type = require("gguf", "gguf").TokenType
    ids = {t: i for i, t in enumerate(tokens)}
    special = {int(token_type.CONTROL), int(token_type.USER_DEFINED), int(token_type.UNKNOWN)}
    rule = {i for i, kind in enumerate(types) if kind in special} | {ids.get("</s>")}
    rule -= {ids.get(t) for t in _PHI3_KEEP}
    if rstrip != rule or not all(t in ids for t in ("</s>", *_PHI3_KEEP)):
        raise LlmforgeError(f"{where}: GGUF export of {family} models: the added tokens' rstrip differs from the one "
                            "rule llama.cpp applies (Phi-3's); use llama.cpp's convert_hf_to_gguf.py or ONNX")
    return True


def gguf_name(name: str, vocab: Vocab) -> str:
    """general.name for a model directory's name: llama.cpp strips whitespace after special tokens exactly when
    the name contains phi-3 or phi3, so the name says so when the tokenizer does, and does not otherwise."""
    if vocab.rstrip_specials and not _PHI3_NAME.search(name):
        return f"{name} (phi-3 tokenizer)"
    return name if vocab.rstrip_specials else _PHI3_NAME.sub(r"\1 \2", name)


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


def render_user_turn(chat_template: str, eos_token: str, bos_token: str = "") -> str | None:
    """The HF template rendered for one user message whose content is `USER_TURN` (no bos unless given: it is not
    text the template chooses), or None where the template cannot render that."""
    return _render(chat_template, [{"role": "user", "content": USER_TURN}], eos_token, bos_token)


def _render(chat_template: str, messages: list[dict[str, str]], eos_token: str, bos_token: str = "") -> str | None:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        return _compile_jinja_template(chat_template).render(
            messages=messages, add_generation_prompt=False, bos_token=bos_token, eos_token=eos_token)
    except Exception:  # a template may insist on a system turn, tools, dates ...: then there is nothing to read
        return None


def _require_special_start(template: str | None, tokens: list[str], types: list[int], bos_id: int | None,
                           eos_id: int | None, where: Path, family: str) -> None:
    """Refuse a Metaspace-"first" tokenizer (Mistral v0.3's) unless its chat prompts begin with a special token,
    the text llama.cpp tokenizes as HF does (see the module's docstring)."""
    bos, eos = (tokens[i] if i is not None else "" for i in (bos_id, eos_id))
    text = render_user_turn(template, eos, bos) if template else None
    token_type = require("gguf", "gguf").TokenType
    added = (int(token_type.CONTROL), int(token_type.USER_DEFINED))
    if text and any(text.startswith(t) for t, kind in zip(tokens, types) if kind in added):
        return
    if not template:
        why = "it has no chat template"
    elif text is None:
        why = "its chat template cannot be rendered for one user turn"
    else:
        why = f"its chat template begins with text: {text.split(USER_TURN)[0][:40]!r}"
    raise LlmforgeError(
        f"{where}: GGUF export of {family} models: this tokenizer puts `▁` before the start of the text only "
        "(Metaspace, prepend_scheme 'first', as Mistral v0.3's), which llama.cpp tokenizes alike only for text "
        f"that begins with a special token, as chat prompts do; {why}. Give the tokenizer a chat template that "
        "begins with bos or a special token (chat_template.jinja), or export ONNX (-f onnx)")


def _end_of_turn(template: str | None, tokens: list[str], types: list[int], eos_id: int | None) -> int | None:
    """The added token a chat template writes right after an assistant message's content, where it is not eos:
    Gemma's `<end_of_turn>`, Phi-3's `<|end|>` (llama.cpp ends generation there, as transformers'
    generation_config does); not Mistral v0.3's `[/INST]`, which ends a user turn only."""
    eos = tokens[eos_id] if eos_id is not None else ""
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": USER_TURN}]
    text = (_render(template, turns, eos) or render_user_turn(template, eos)) if template else None
    if not text or USER_TURN not in text:
        return None
    after = text.split(USER_TURN, 1)[1]
    token_type = require("gguf", "gguf").TokenType
    added = (int(token_type.CONTROL), int(token_type.USER_DEFINED))
    found = [i for i, (t, kind) in enumerate(zip(tokens, types)) if kind in added and after.startswith(t)]
    best = max(found, key=lambda i: len(tokens[i]), default=None)
    return None if best == eos_id else best
