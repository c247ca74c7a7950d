"""Tiny offline stand-ins for the model families users bring: a random-weight model from the family's own
transformers config class, and a tokenizer of the same kind built here with `tokenizers` (the family's
pre-tokenizer regex, normalizer, decoder, special tokens and ignore_merges), with the family's real chat template.

What each family's real tokenizer.json holds (checked against the published files):
- Llama 3.x: byte-level BPE, Split(LLAMA3_REGEX) then ByteLevel(use_regex=False), ignore_merges, no normalizer,
  `<|begin_of_text|>` prepended by the post-processor, turns end with `<|eot_id|>`.
- Qwen2 / 2.5: byte-level BPE, Split(QWEN2_REGEX) then ByteLevel(use_regex=False), NFC normalizer, no bos,
  ChatML (`<|im_start|>` / `<|im_end|>`) with a default system prompt; q/k/v projections carry biases.
- Mistral (v0.1/v0.2) and Llama 2: SentencePiece BPE as tokenizer.json writes it: BPE with byte fallback
  (`<0x00>`..`<0xFF>` in the vocab), a `Prepend("▁")` + `Replace(" ", "▁")` normalizer, no pre-tokenizer, `<s>`
  prepended; `[INST]` template, Mistral's without a system role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tests.helpers import corpus

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's tokenizer_config.json
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2_TEMPLATE = (  # Qwen2-0.5B-Instruct's tokenizer_config.json
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FAMILIES = ("llama3", "qwen2", "mistral")


def _byte_level_bpe(regex: str, specials: list[str], vocab_size: int, nfc: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() + ["2024-12-01 12345 67890", "x = [1, 22, 333, 4444]\n\n\tif y:\n"],
                            trainer=trainer)
    return tok


def _llama3(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    bos, eot = "<|begin_of_text|>", "<|eot_id|>"
    specials = [bos, "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", eot]
    tok = _byte_level_bpe(LLAMA3_REGEX, specials, 600, nfc=False)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    raw = json.loads(tok.to_str())
    raw["model"]["ignore_merges"] = True  # as Llama 3's tokenizer.json: a whole word in the vocab is one token
    tok = Tokenizer.from_str(json.dumps(raw))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eot, pad_token="<|end_of_text|>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = LLAMA3_TEMPLATE
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id)
    return fast, LlamaForCausalLM(config)


def _qwen2(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _byte_level_bpe(QWEN2_REGEX, specials, 600, nfc=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = QWEN2_TEMPLATE
    config = Qwen2Config(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_theta=1000000.0, tie_word_embeddings=True, eos_token_id=fast.eos_token_id,
                         bos_token_id=None)
    return fast, Qwen2ForCausalLM(config)


def _sentencepiece_bpe(specials: list[str], vocab_size: int) -> Tokenizer:
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False,
                                  limit_alphabet=40)  # rarer characters go through byte fallback
    tok.train_from_iterator(corpus() + ["2024-12-01 12345 67890", "x = [1, 22, 333, 4444]\n\n\tif y:\n"],
                            trainer=trainer)
    raw = json.loads(tok.to_str())  # byte tokens are plain vocab entries in SentencePiece tokenizers, not added ones
    raw["added_tokens"] = [a for a in raw["added_tokens"] if a["content"] not in byte_tokens]
    return Tokenizer.from_str(json.dumps(raw))


def _mistral(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import MistralConfig, MistralForCausalLM

    from llmforge.models.chat import MISTRAL

    tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], 700)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = MISTRAL
    config = MistralConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           sliding_window=None, tie_word_embeddings=False, bos_token_id=fast.bos_token_id,
                           eos_token_id=fast.eos_token_id)
    return fast, MistralForCausalLM(config)


def build_family(name: str, root: Path, seed: int = 0) -> Path:
    """Write the tiny `name` model and its tokenizer to `root / name`; return that directory."""
    torch.manual_seed(seed)
    tokenizer, model = {"llama3": _llama3, "qwen2": _qwen2, "mistral": _mistral}[name](root)
    with torch.no_grad():  # random biases too, so a dropped bias shows in the logits
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    out = root / name
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
