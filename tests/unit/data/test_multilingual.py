"""Non-Latin text through data and templates: CJK, Arabic (RTL), Devanagari (combining marks), Cyrillic and emoji
(ZWJ sequences, skin tones) round-trip through every tokenizer and named template, `llmforge prepare` keeps and
masks them exactly (trained tokens decode to the answer and the end of turn), and nothing is lost to decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmforge.data.tokenize import IGNORE, render_chat, tokenize_batch
from llmforge.export.parity import MULTILINGUAL_TEXTS
from tests.multilingual import mixed_script_records

END = {"chatml": "<|im_end|>", "llama-3": "<|eot_id|>", "llama-2": " <|im_end|>", "mistral": "<|im_end|>",
       "gemma": "<end_of_turn>", "phi-3": "<|end|>", "user-assistant": "<|im_end|>", "dialogpt": "<|im_end|>"}
FAMILY_END = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "</s>", "gemma2": "<end_of_turn>",
              "gemma3": "<end_of_turn>", "phi3": "<|end|>", "gpt2": "<|endoftext|>"}


@pytest.fixture(scope="module")
def template_tokenizer(tiny_model_dir: Path):
    """The tiny tokenizer with every named template's special tokens (eos stays <|im_end|>)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": [
        "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>",
        "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    return tok


@pytest.fixture(scope="module")
def family_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from transformers import AutoTokenizer

    from tests.families import FAMILIES, build_family

    root = tmp_path_factory.mktemp("families")
    return {name: AutoTokenizer.from_pretrained(str(build_family(name, root))) for name in FAMILIES}


def _trained(tok, sample) -> str:
    return tok.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE])


def _assert_chat_round_trips(tok, text: str, end: str, whole: bool = True) -> None:
    """The rendered chat decodes back to itself (`whole`; else its contents survive decoding), and its trained
    tokens to the answer and the end of turn (at most the whitespace the template writes before the answer comes
    along with them)."""
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    rendered = render_chat(tok, messages)
    (sample,) = tokenize_batch(tok, [rendered])
    decoded = tok.decode(sample.input_ids)
    assert decoded == rendered.text if whole else decoded.count(text) == rendered.text.count(text) == 2
    trained = _trained(tok, sample)
    assert trained.endswith(text + end) and not trained[: -len(text + end)].strip(), (trained, text)


@pytest.mark.parametrize("text", MULTILINGUAL_TEXTS)
@pytest.mark.parametrize("template", sorted(END))
def test_every_named_template_round_trips_non_latin_chats(template_tokenizer, template: str, text: str) -> None:
    from llmforge.models.chat import TEMPLATES

    template_tokenizer.chat_template = TEMPLATES[template]
    _assert_chat_round_trips(template_tokenizer, text, END[template])


@pytest.mark.parametrize("family", sorted(FAMILY_END))
def test_every_family_tokenizer_and_template_round_trips_non_latin_text(family_tokenizers, family: str) -> None:
    from llmforge.models.chat import TEMPLATES

    tok = family_tokenizers[family]
    if not tok.chat_template:  # GPT-2: the family's default template
        tok.chat_template = TEMPLATES["dialogpt"]
    for text in MULTILINGUAL_TEXTS:  # all NFC, so Qwen2's NFC normalizer leaves them as they are
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
        # SentencePiece families decode a chat with a space after `<s>` / `<|user|>` (their ▁ prefix), whatever the
        # script: there only the contents must survive
        _assert_chat_round_trips(tok, text, FAMILY_END[family], whole=family not in ("mistral", "phi3"))


def test_prepare_keeps_and_masks_mixed_script_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare
    from tests.helpers import write_jsonl

    records = mixed_script_records(copies=2)
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    out = tmp_path / "prep"
    report = prepare(PrepareConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)),
                                   data=DataConfig(path=[str(data)], split=SplitConfig(validation=0.0, test=0.0)),
                                   output_dir=out)).metrics
    assert report["records_read"] == report["records_kept"] == len(records)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    train = load_from_disk(str(out / "train"))
    trained = [tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
               for ids, labels in zip(train["input_ids"], train["labels"])]
    assert sorted(trained) == sorted(r["output"] + tok.eos_token for r in records)
