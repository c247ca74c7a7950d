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
- Mistral v0.3 (`mistral-v03`, a variant for the GGUF tests, not in FAMILIES): the same BPE with no normalizer and
  a Metaspace pre-tokenizer (prepend_scheme "first", no split), `[INST]`/`[/INST]` special tokens, and its
  template's whitespace: `[INST] ` before a user turn, ` ` before an assistant one.
- Gemma 2: SentencePiece BPE with byte fallback but no `▁` prefix (normalizer `Replace(" ", "▁")` alone), `<bos>`
  prepended, `<eos>` as the tokenizer's eos while turns end with `<end_of_turn>` (generation_config lists both);
  a template that raises on a system message; scaled embeddings, soft-capping, sliding-window layers.
- Gemma 3 (text, Gemma3ForCausalLM): Gemma 2's tokenizer kind and turn format, but a template that folds a system
  message into the first user turn itself; per-head q/k RMSNorms, five sliding layers (rope base 10k) to one
  global (1M), no soft-capping, query_pre_attn_scalar.
- Phi-3 (mini): Llama 2's SentencePiece tokenizer with `<|user|>`/`<|assistant|>`/`<|end|>` added, no bos;
  eos `<|endoftext|>` closes a conversation after the last `<|end|>`; fused `qkv_proj` and `gate_up_proj`.
- GPT-2 / DialoGPT: byte-level BPE with the GPT-2 regex (ByteLevel with use_regex), `<|endoftext|>` as bos, eos
  and unk, no chat template (DialoGPT's turns are separated by eos); Conv1D layers, learned positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.pytorch_utils import Conv1D

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

GEMMA2_TEMPLATE = (  # gemma-2-2b-it's tokenizer_config.json
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
GEMMA3_TEMPLATE = (  # gemma-3-1b-it's tokenizer_config.json: a system message is folded into the first user turn
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)
PHI3_TEMPLATE = (  # Phi-3-mini-4k-instruct's tokenizer_config.json
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

FAMILIES = ("llama3", "qwen2", "mistral", "gemma2", "gemma3", "phi3", "gpt2")


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


def _sentencepiece_bpe(specials: list[str], vocab_size: int, prefix: bool = True) -> Tokenizer:
    """`prefix`: the `▁` that SentencePiece's add_dummy_prefix puts before the text (Llama 2, Mistral; not Gemma)."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    replace = normalizers.Replace(" ", "▁")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), replace]) if prefix else replace
    strip = [decoders.Strip(" ", 1, 0)] if prefix else []
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False,
                                  limit_alphabet=40)  # rarer characters go through byte fallback
    tok.train_from_iterator(corpus() + ["2024-12-01 12345 67890", "x = [1, 22, 333, 4444]\n\n\tif y:\n"],
                            trainer=trainer)
    raw = json.loads(tok.to_str())  # byte tokens are plain vocab entries in SentencePiece tokenizers, not added ones
    raw["added_tokens"] = [a for a in raw["added_tokens"] if a["content"] not in byte_tokens]
    return Tokenizer.from_str(json.dumps(raw))


def _mistral_model(fast: PreTrainedTokenizerFast) -> Any:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           sliding_window=None, tie_word_embeddings=False, bos_token_id=fast.bos_token_id,
                           eos_token_id=fast.eos_token_id)
    return MistralForCausalLM(config)


def _mistral(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from llmforge.models.chat import MISTRAL

    tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], 700)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = MISTRAL
    return fast, _mistral_model(fast)


MISTRAL_V03_TEMPLATE = (  # Mistral-7B-Instruct-v0.3's, without its tools and system handling
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] | trim + eos_token }}{% endif %}{% endfor %}"
)


def _mistral_v03(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    raw = json.loads(_sentencepiece_bpe(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], 700).to_str())
    raw["normalizer"] = None  # `▁` for spaces, and before the text's start only: Metaspace "first"
    raw["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    tok = Tokenizer.from_str(json.dumps(raw))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = MISTRAL_V03_TEMPLATE
    return fast, _mistral_model(fast)


def _gemma_tokenizer(template: str) -> PreTrainedTokenizerFast:
    """Gemma 2's and Gemma 3's tokenizer kind: SentencePiece BPE without a `▁` prefix, `<bos>` prepended."""
    tok = _sentencepiece_bpe(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], 700,
                             prefix=False)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    fast.chat_template = template
    return fast


def _gemma2(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    fast = _gemma_tokenizer(GEMMA2_TEMPLATE)
    config = Gemma2Config(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                          sliding_window=256, query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
                          final_logit_softcapping=30.0, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                          eos_token_id=[fast.eos_token_id, fast.convert_tokens_to_ids("<end_of_turn>")])
    return fast, Gemma2ForCausalLM(config)


def _gemma3(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    fast = _gemma_tokenizer(GEMMA3_TEMPLATE)
    # Six layers, so the released pattern shows: five sliding layers (rope base 10k), then a global one (1M)
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                              sliding_window=256, query_pre_attn_scalar=16, pad_token_id=fast.pad_token_id,
                              bos_token_id=fast.bos_token_id,
                              eos_token_id=[fast.eos_token_id, fast.convert_tokens_to_ids("<end_of_turn>")])
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # random norms (they start at zero, i.e. scale 1): an unshifted or dropped one shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # q_norm and k_norm (per head) too
                param.normal_(0, 0.3)
    return fast, model


def _phi3(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import Phi3Config, Phi3ForCausalLM

    tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], 700)
    added = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
    tok.add_special_tokens(added)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>", model_max_length=1024,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = PHI3_TEMPLATE
    config = Phi3Config(vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                        original_max_position_embeddings=1024, sliding_window=None, tie_word_embeddings=False,
                        bos_token_id=fast.bos_token_id, pad_token_id=fast.pad_token_id,
                        eos_token_id=[fast.eos_token_id, fast.convert_tokens_to_ids("<|end|>")])
    return fast, Phi3ForCausalLM(config)


def _gpt2(root: Path) -> tuple[PreTrainedTokenizerFast, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    eot = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's own regex (use_regex)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[eot], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                   model_max_length=1024, clean_up_tokenization_spaces=False)
    config = GPT2Config(vocab_size=len(fast), n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    return fast, GPT2LMHeadModel(config)


BUILDERS = {"llama3": _llama3, "qwen2": _qwen2, "mistral": _mistral, "gemma2": _gemma2, "gemma3": _gemma3,
            "phi3": _phi3, "gpt2": _gpt2}

BUILDERS["mistral-v03"] = _mistral_v03  # a tokenizer variant of a family, for the GGUF tests only


def build_family(name: str, root: Path, seed: int = 0) -> Path:
    """Write the tiny `name` model and its tokenizer to `root / name`; return that directory."""
    torch.manual_seed(seed)
    tokenizer, model = BUILDERS[name](root)
    with torch.no_grad():  # random biases too, so a dropped bias shows in the logits
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, Conv1D)) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    out = root / name
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
