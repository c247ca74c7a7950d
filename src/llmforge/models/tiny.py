"""Small Llama-architecture models built from a config, with a byte-level BPE tokenizer trained in-process.

Used for the embedded demo model (pretrained by llmforge itself, see `llmforge.demo`) and by the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llmforge.models.chat import CHATML

PAD, BOS, EOS, IM_START = "<|pad|>", "<s>", "<|im_end|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START]


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 1024


PRESETS: dict[str, Preset] = {
    # FFN widths are multiples of 256 so llama.cpp's K-quants apply; GQA (2 kv heads) is exercised everywhere.
    "test": Preset(64, 256, 2, 4, 2, 256),
    "demo": Preset(256, 768, 4, 4, 2, 1024),
    "small": Preset(512, 1536, 8, 8, 4, 1024),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style pre-tokenizer) with bos/eos/pad and a ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[IM_START], model_max_length=1024, clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML
    return fast


def build_model(tokenizer: PreTrainedTokenizerFast, preset: str = "demo", seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised LlamaForCausalLM sized by `preset`, matching `tokenizer`'s vocabulary."""
    p = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_key_value_heads,
        max_position_embeddings=p.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
