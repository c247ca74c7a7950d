"""Load a model and tokenizer from a hub id, a local directory, an llmforge run directory, or 'demo'.

Everything goes through transformers' Auto classes (and peft for adapters); `trust_remote_code` stays off
unless the config turns it on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models import int8
from llmforge.models.chat import TEMPLATES
from llmforge.models.cpu import precision_for
from llmforge.models.families import family_of_dir
from llmforge.models.reference import ModelRef, resolve_model

log = logging.getLogger("llmforge")


def default_dtype(requested: str, device: torch.device, inference: bool = False) -> torch.dtype:
    """The weights' dtype. 'auto' follows `llmforge.models.cpu`'s rule: bf16 where the device computes it natively
    (a GPU that supports it; for `inference`, also a CPU with AMX-BF16 or avx512_bf16), else fp32. Stages that
    train, compress, export or evaluate keep fp32 weights on a CPU: training autocasts to bf16 over them (fp32
    master weights), and the others measure or write the model itself, not a bf16 copy of it."""
    if requested != "auto":
        return getattr(torch, requested)
    choice = precision_for("auto", device)
    if choice.name == "bf16" and (device.type == "cuda" or inference):
        return torch.bfloat16
    return torch.float32  # fp16 weights (a GPU without bf16) overflow too easily to be a default


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _attention(cfg: ModelConfig) -> dict[str, Any]:
    """transformers picks the kernel itself unless one is asked for (it refuses sdpa where an architecture has none)."""
    return {} if cfg.attn_implementation == "auto" else {"attn_implementation": cfg.attn_implementation}


def _hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}


def context_length(config: Any) -> int | None:
    """The most positions a model config says it takes (None when it does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_context(cfg: ModelConfig, ref: ModelRef | None = None) -> int | None:
    """`cfg`'s model's context length from its config (a local config.json, else transformers' AutoConfig, which
    may reach the hub); None when it cannot be read or does not say."""
    import json

    ref = ref or resolve_model(cfg.name_or_path)
    local = Path(ref.path) / "config.json"
    try:
        if local.is_file():
            return context_length(json.loads(local.read_text(encoding="utf-8")))
        from transformers import AutoConfig

        return context_length(AutoConfig.from_pretrained(ref.path, **_hub_kwargs(cfg)))
    except (OSError, ValueError):
        return None


def _check_config_json(model_dir: str | Path) -> None:
    """A local model's config.json must parse: name the file and the spot, before any loader trips on it."""
    import json

    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LlmforgeError(f"{config}: not valid JSON ({exc}); config.json must be the model's transformers "
                            "config, as `save_pretrained` writes it") from exc


def _load_error(name: str, exc: Exception) -> LlmforgeError:
    local = Path(name).exists()
    why = "" if local else " It is not a local directory, and the hub may be unreachable from here."
    return LlmforgeError(f"could not load model '{name}': {type(exc).__name__}: {exc}.{why}")


def load_tokenizer(cfg: ModelConfig, ref: ModelRef | None = None) -> Any:
    """The tokenizer of `cfg`'s model (an adapter's own, when it was saved with one). `ref`: already resolved."""
    from transformers import AutoTokenizer

    ref = ref or resolve_model(cfg.name_or_path)
    _check_config_json(ref.path)
    source = ref.tokenizer or ref.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_hub_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from exc
    if tokenizer.pad_token is None:
        # Padding only fills batches; it is masked out of attention and loss, so eos is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        _family_template(tokenizer, ref.path)
    return tokenizer


def _family_template(tokenizer: Any, model_path: str) -> None:
    """A tokenizer without a chat template gets its family's settled format (GPT-2/DialoGPT: turns separated
    by eos), so chats train and serve with no flag; other families keep none and ask for data.chat_template."""
    family = family_of_dir(model_path)
    if family is not None and family.default_template:
        tokenizer.chat_template = TEMPLATES[family.default_template]
        log.info("%s has no chat template; using the %s family's '%s' turn format", model_path, family.name,
                 family.default_template)


def load_model(
    cfg: ModelConfig, device: torch.device | None = None, *, merge_adapter: bool = False,
    quantization_config: Any = None, ref: ModelRef | None = None, inference: bool = False,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) in eval mode on `device`. An adapter run loads as a PeftModel (merged with
    `merge_adapter`). `ref`: `cfg.name_or_path` already resolved (`llmforge.models.reference.resolve_model`).
    `inference`: the model only generates (the server), so dtype 'auto' may pick bf16 on a CPU (`default_dtype`)."""
    from transformers import AutoModelForCausalLM

    resolved = ref or resolve_model(cfg.name_or_path)
    _check_config_json(resolved.path)
    if resolved.kind == "int8":
        return _load_int8(cfg, resolved, device or torch.device("cpu"))
    device = device or default_device()
    dtype = default_dtype(cfg.dtype, device, inference)
    extra: dict[str, Any] = {}
    if quantization_config is not None:  # quantized weights are placed by their loader, not moved afterwards
        extra = {"quantization_config": quantization_config, "device_map": {"": device.index or 0}}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=dtype, **_attention(cfg), **_hub_kwargs(cfg), **extra
        )
    except (OSError, ValueError) as exc:
        raise _load_error(resolved.path, exc) from exc
    if resolved.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter))
        if merge_adapter:
            model = model.merge_and_unload()
    if quantization_config is None:
        model.to(device)
    model.eval()
    return model, load_tokenizer(cfg, resolved)


def _load_int8(cfg: ModelConfig, ref: ModelRef, device: torch.device) -> tuple[Any, Any]:
    """llmforge int8 artifacts run on CPU int8 kernels (see llmforge.models.int8)."""
    if device.type != "cpu":
        raise LlmforgeError(f"{ref.path} is an llmforge int8 model for CPU kernels; load it on the CPU (device cpu)")
    return int8.load_int8(Path(ref.path)), load_tokenizer(cfg, ref)
