"""The model families llmforge supports, stage by stage: one registry, read by the code and by the README.

A family is known by the architecture in its config.json. The registry says what is particular to each family
that the rest of llmforge needs (the chat template a tokenizer without one gets), and which stages refuse it and
why. The README's "Model families" table is rendered from it (`llmforge families --markdown`), and the family
matrix test (tests/integration/test_family_matrix.py) runs every cell: a supported cell must work, a refused one
must refuse with the reason given here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The stages a family goes through, as the README's columns name them.
STAGES = ("prepare", "train-lora", "train-full", "int8", "prune", "onnx", "gguf", "serve")
STAGE_TITLES = {"prepare": "prepare + masking", "train-lora": "LoRA (merged = adapter)", "train-full": "full FT",
                "int8": "int8", "prune": "structured prune", "onnx": "ONNX", "gguf": "GGUF (llama.cpp)",
                "serve": "serve"}


@dataclass(frozen=True)
class Family:
    key: str
    name: str  # as users know it
    architectures: tuple[str, ...]  # config.json "architectures"
    template: str  # its own template's turn format, as a named template (llmforge.models.chat)
    particular: str  # what the stages must get right for it
    # A named template for a tokenizer that comes without one. Only where the family's format is settled:
    # GPT-2's is DialoGPT's (the template transformers gave GPT-2 tokenizers by default until v4.43).
    default_template: str | None = None
    refused: dict[str, str] = field(default_factory=dict)  # stage -> why; the README shows it
    limits: dict[str, str] = field(default_factory=dict)  # stage -> what a supported stage leaves out

    def supports(self, stage: str) -> bool:
        return stage not in self.refused


FAMILIES = (
    Family("llama", "Llama 2, Llama 3.x, SmolLM2", ("LlamaForCausalLM",), "llama-3 / llama-2 / chatml",
           "tiktoken-style BPE (`llama-bpe`), GPT-2 BPE or SentencePiece; `<|eot_id|>` ends a Llama 3 turn"),
    Family("qwen2", "Qwen2, Qwen2.5", ("Qwen2ForCausalLM",), "chatml",
           "biases on q/k/v; NFC normalizer; a default system prompt in its template"),
    Family("mistral", "Mistral", ("MistralForCausalLM",), "mistral",
           "SentencePiece BPE with byte fallback and a `▁` prefix; no system role (folded into the first turn)",
           limits={"gguf": "v0.3's Metaspace tokenizer: as HF on chat prompts; plain text that begins with "
                           "a word loses its leading `▁` in llama.cpp"}),
    Family("gemma2", "Gemma 2", ("Gemma2ForCausalLM",), "gemma",
           "SentencePiece without a prefix; no system role (folded); soft-capping, sliding window, extra norms; "
           "turns end with `<end_of_turn>`, not eos"),
    Family("gemma3", "Gemma 3 (text)", ("Gemma3ForCausalLM",), "gemma",
           "Gemma 2's tokenizer and turns, its template folding a system message itself; per-head q/k norms; five "
           "sliding layers (rope base 10k) to one global (1M); no soft-capping",
           limits={"gguf": "the released 5:1 sliding pattern and 10k local rope base; rope scaling is refused"}),
    Family("phi3", "Phi-3", ("Phi3ForCausalLM",), "phi-3",
           "fused `qkv_proj` and `gate_up_proj`; eos closes a conversation after `<|end|>`",
           limits={"gguf": "4k/8k context; the 128k longrope variants are refused"}),
    Family("gpt2", "GPT-2, DialoGPT", ("GPT2LMHeadModel",), "dialogpt",
           "Conv1D layers, learned positions, no chat template: turns separated by eos (DialoGPT)",
           default_template="dialogpt",
           # transformers 5 derives GPT-2's head width from n_embd / n_head: a model with fewer heads won't reload
           limits={"prune": "MLP channels; prune.heads is refused"}),
)
BY_KEY = {f.key: f for f in FAMILIES}
_BY_ARCH = {arch: f for f in FAMILIES for arch in f.architectures}


def family_of(config: dict[str, Any] | Any) -> Family | None:
    """The family of a model config (config.json as a dict, or a transformers config); None when unknown."""
    archs = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
    return next((_BY_ARCH[a] for a in archs or () if a in _BY_ARCH), None)


def family_of_dir(model_dir: str | Path) -> Family | None:
    path = Path(model_dir) / "config.json"
    try:
        return family_of(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def cell(family: Family, stage: str) -> str:
    if not family.supports(stage):
        return f"no: {family.refused[stage]}"
    return f"yes ({family.limits[stage]})" if stage in family.limits else "yes"


def markdown_table() -> str:
    """The README's table: families x stages, with each refusal's reason."""
    head = ["family", "architecture", "chat template", *(STAGE_TITLES[s] for s in STAGES)]
    rows = [[f.name, ", ".join(f"`{a}`" for a in f.architectures), f.template, *(cell(f, s) for s in STAGES)]
            for f in FAMILIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"- **{f.name}**: {f.particular}." for f in FAMILIES]
    return "\n".join(lines + [""] + notes)
