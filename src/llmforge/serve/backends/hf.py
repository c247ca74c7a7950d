"""The transformers backend (PyTorch, CPU or GPU): a `DynamicCache` per running batch.

Adapter runs are loaded with their LoRA weights merged, so an adapter decodes as fast as its base model.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models.footprint import stored_weights
from llmforge.models.loader import context_length
from llmforge.models.reference import ModelRef
from llmforge.serve.backends import kv
from llmforge.serve.backends.base import LoadOptions, eos_ids, resolve_max_len


def _forward_params(model: Any) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_model_len = resolve_max_len(_full_attention_limit(model.config), max_model_len)
        self.eos_token_ids = eos_ids(tokenizer, getattr(model, "generation_config", None))
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        params = _forward_params(model)
        # transformers 5.24 renamed `past_key_values` to `cache`; accept either so both sides of it work.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.info = {"backend": self.name, "device": str(self.device), "dtype": str(next(model.parameters()).dtype),
                     "parameters": stored_weights(model)[0], "max_model_len": self.max_model_len,
                     **(info or {})}

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, kv.PaddedBatch]:
        ids, mask = kv.left_pad(prompts, self.pad_id, self.device)  # (B, W)
        cache = self._new_cache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=kv.prefill_positions(mask),
                         use_cache=True, **{self.cache_arg: cache}, **self.keep_last)
        _check_layers(cache, self.max_model_len)
        batch = kv.PaddedBatch(layers=cache.layers, mask=mask, lengths=mask.sum(-1), handle=cache)
        return out.logits[:, -1].float(), batch  # (B, V)

    @torch.inference_mode()
    def decode(self, state: kv.PaddedBatch, tokens: torch.Tensor) -> torch.Tensor:
        mask = kv.grow(state)  # (B, T + 1)
        out = self.model(input_ids=tokens.to(self.device)[:, None], attention_mask=mask,
                         position_ids=state.lengths[:, None], use_cache=True, **{self.cache_arg: state.handle})
        state.mask, state.lengths = mask, state.lengths + 1
        return out.logits[:, -1].float()  # (B, V)

    def join(self, state: kv.PaddedBatch, other: kv.PaddedBatch) -> kv.PaddedBatch:
        return _synced(kv.join(state, other))

    def select(self, state: kv.PaddedBatch, rows: list[int]) -> kv.PaddedBatch | None:
        return _synced(kv.select(state, rows))


def _full_attention_limit(config: Any) -> int | None:
    """The model's context, capped below its sliding window (Gemma 2/3, Mistral v0.1): within the window a
    sliding layer attends to every cached token, so the engine's padded full-attention batching holds."""
    limit, window = context_length(config), getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False:  # Qwen2 names a window it does not use
        return limit
    if isinstance(window, int) and window > 1 and (limit is None or limit > window - 1):
        return window - 1
    return limit


def _synced(state: kv.PaddedBatch | None) -> kv.PaddedBatch | None:
    """After rows joined or left, a sliding-window layer's token count is its (padded) width again: the attention
    mask it sizes is the batch's padded mask."""
    for layer in state.layers if state is not None else []:
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = layer.keys.shape[-2]
    return state


def _check_layers(cache: Any, max_model_len: int) -> None:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    odd = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer
           and not (type(layer) is DynamicSlidingWindowLayer and max_model_len < layer.sliding_window)}
    if odd:
        raise LlmforgeError(
            f"this model's cache uses {', '.join(sorted(odd))} layers; the serving engine batches full-attention "
            "KV caches, and sliding-window ones within their window (max_model_len below it)"
        )


def _unreadable_weights(model_dir: Path) -> Path | None:
    """The first *.safetensors file in `model_dir` whose header cannot be read, if any."""
    from safetensors import safe_open

    for file in sorted(model_dir.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception:
            return file
    return None


def load(ref: ModelRef, opts: LoadOptions) -> TransformersBackend:
    from llmforge.models.loader import default_device, load_model

    device = default_device() if opts.device == "auto" else torch.device(opts.device)
    cfg = ModelConfig(name_or_path=ref.ref, dtype=opts.dtype,  # type: ignore[arg-type]
                      trust_remote_code=opts.trust_remote_code)
    try:
        model, tokenizer = load_model(cfg, device, merge_adapter=True, ref=ref, inference=True)
    except LlmforgeError:
        raise
    except Exception as exc:  # e.g. safetensors' own error, which names no file
        broken = _unreadable_weights(Path(ref.path))
        if broken is None:
            raise
        raise LlmforgeError(f"{broken}: not a readable safetensors file ({exc})") from exc
    info: dict[str, Any] = {"path": ref.path, "adapter": str(ref.adapter) if ref.adapter else None}
    if ref.run_dir is not None:
        info["kind"] = ref.manifest.get("kind")
    return TransformersBackend(model, tokenizer, opts.max_model_len, info)
