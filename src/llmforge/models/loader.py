"""Load a model and tokenizer from a hub id, a local directory, an llmforge run directory, or 'demo'.

Everything goes through transformers' Auto classes (and peft for adapters); `trust_remote_code` stays off
unless the config turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmforge.artifacts import is_run_dir, read_manifest
from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models import int8

DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo-base"


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are: a full model (`path`), or a peft adapter (`adapter`) over `path`."""

    path: str
    adapter: Path | None = None


def resolve_model(name_or_path: str | Path) -> ResolvedModel:
    from llmforge.models.presets import preset_reference

    name = str(name_or_path)
    name = preset_reference(name) or name  # a preset: its pulled run dir, or its hub id (see `llmforge models`)
    if name == DEMO_NAME:
        if not (DEMO_DIR / "config.json").is_file():
            raise LlmforgeError(
                f"the embedded demo model is missing from {DEMO_DIR}; rebuild it with `make demo-base`"
            )
        return ResolvedModel(str(DEMO_DIR))
    path = Path(name).expanduser()
    _refuse_export(name, path)
    if is_run_dir(path):
        manifest = read_manifest(path)
        if manifest.get("model_dir"):
            return ResolvedModel(str(path / manifest["model_dir"]))
        if manifest.get("adapter_dir"):
            return ResolvedModel(str(resolve_model(manifest["base_model"]).path), path / manifest["adapter_dir"])
        raise LlmforgeError(f"{path} is a '{manifest.get('kind')}' run directory, which holds no model")
    if path.exists() and not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            import json

            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            return ResolvedModel(resolve_model(base).path, path)
        raise LlmforgeError(f"{path} exists but holds no model (no config.json or adapter_config.json)")
    if not path.exists() and _looks_like_path(name):
        raise LlmforgeError(f"{path}: no such directory (a local model directory, run directory or export)")
    return ResolvedModel(name)


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything absolute, relative-dotted, home-based or deeper is a path."""
    return name.startswith(("/", ".", "~", "\\")) or name.count("/") > 1 or "\\" in name


def _refuse_export(name: str, path: Path) -> None:
    """An export (ONNX, GGUF, TensorRT) runs on its own runtime; PyTorch loaders say so instead of failing late."""
    from llmforge.models.reference import find_export

    if not path.exists():
        return
    export_run = is_run_dir(path) and read_manifest(path).get("kind") == "export"
    try:
        exported = find_export(path)
    except LlmforgeError:  # an export run holding several formats
        exported = None
    if not export_run and exported is None:
        return
    if exported is not None and exported.run_dir:
        manifest = read_manifest(exported.run_dir)
    else:
        manifest = read_manifest(path) if export_run else {}
    what = f"the {exported.format} export" if exported else "an export run"
    source = manifest.get("source_model")
    raise LlmforgeError(
        f"{name} is {what}: it runs on its own runtime, not transformers. `llmforge bench` and `llmforge eval` "
        "measure it; PyTorch workflows need the model it was exported from"
        + (f" ({source})" if source else "")
    )


def default_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    # CPUs without native bf16 run it ~60x slower than fp32 (see FIELD_NOTES): fp32 on CPU.
    return torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}


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


def load_tokenizer(cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    resolved = resolve_model(cfg.name_or_path)
    _check_config_json(resolved.path)
    source = str(resolved.adapter) if resolved.adapter and (resolved.adapter / "tokenizer_config.json").exists() \
        else resolved.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_hub_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc) from exc
    if tokenizer.pad_token is None:
        # Padding only fills batches; it is masked out of attention and loss, so eos is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    cfg: ModelConfig, device: torch.device | None = None, *, merge_adapter: bool = False,
    quantization_config: Any = None,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) in eval mode on `device`. An adapter run loads as a PeftModel."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(cfg.name_or_path)
    _check_config_json(resolved.path)
    if resolved.adapter is None and int8.is_int8_dir(Path(resolved.path)):
        return _load_int8(cfg, Path(resolved.path), device or torch.device("cpu"))
    device = device or default_device()
    dtype = default_dtype(cfg.dtype, device)
    extra: dict[str, Any] = {}
    if quantization_config is not None:  # quantized weights are placed by their loader, not moved afterwards
        extra = {"quantization_config": quantization_config, "device_map": {"": device.index or 0}}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=dtype, attn_implementation=cfg.attn_implementation, **_hub_kwargs(cfg), **extra
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
    return model, load_tokenizer(cfg)


def _load_int8(cfg: ModelConfig, path: Path, device: torch.device) -> tuple[Any, Any]:
    """llmforge int8 artifacts run on CPU int8 kernels (see llmforge.models.int8)."""

    if device.type != "cpu":
        raise LlmforgeError(f"{path} is an llmforge int8 model for CPU kernels; load it on the CPU (device cpu)")
    return int8.load_int8(path), load_tokenizer(cfg)
