"""Quantization schemes: each turns a loaded float model into a variant and knows how to save it.

| scheme           | weights                      | runs on                         | saved as                            |
|------------------|------------------------------|---------------------------------|-------------------------------------|
| fp16, bf16       | 16-bit floats                | anywhere (fp16 CPU matmuls slow) | plain transformers safetensors      |
| int8-dynamic     | int8 per channel             | CPU (int8 GEMM) or torchao      | llmforge int8 safetensors           |
| int8-weight-only | int8 per channel             | CPU (int8pack) or torchao       | llmforge int8 safetensors           |
| int8-static      | int8, calibrated activations | ONNX Runtime (QDQ)              | ONNX (see llmforge.export.onnx)     |
| nf4, bnb-int8    | bitsandbytes 4 / 8 bit       | CUDA                            | transformers + bitsandbytes config  |
| int4-weight-only | torchao int4                 | CUDA                            | transformers + torchao config       |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmforge.compress.config import QuantizeOptions
from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError
from llmforge.models import int8
from llmforge.models.int8 import DEFAULT_CPU_KERNEL
from llmforge.models.loader import load_model
from llmforge.models.quantization import cuda_quantization_config

Batches = list[dict[str, torch.Tensor]]


@dataclass
class Variant:
    """A compressed model in memory, how to write it, and what was done to it."""

    model: Any
    save: Callable[[Path], None]
    facts: dict[str, Any] = field(default_factory=dict)


def _save_dense(model: Any, tokenizer: Any) -> Callable[[Path], None]:
    def save(out: Path) -> None:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))

    return save


def resolve_kernel(opts: QuantizeOptions) -> str:
    return DEFAULT_CPU_KERNEL if opts.kernel == "auto" else opts.kernel


def _first_samples(batches: Batches, n: int) -> Batches:
    """The first `n` samples of padded batches, as batches."""
    out: Batches = []
    for batch in batches:
        if n <= 0:
            break
        out.append({k: v[:n] for k, v in batch.items()})
        n -= len(batch["input_ids"])
    return out


def _sensitive_layers(model: Any, opts: QuantizeOptions, activations: str, calibration: Batches | None,
                      ) -> tuple[list[str], list[dict[str, Any]] | None]:
    """(layers to keep at float activations, the per-layer sensitivity table if it was measured)."""
    from llmforge.compress.sensitivity import layer_sensitivity, most_sensitive, quantizable_layers

    measure = opts.sensitivity or (activations == "dynamic" and opts.weight_only == "auto")
    rows = None
    if measure:
        if not calibration:
            raise LlmforgeError("quantize.sensitivity and quantize.weight_only=auto measure layers on calibration "
                                "samples: give `data` (a prepared dataset)")
        rows = layer_sensitivity(model, _first_samples(calibration, opts.sensitivity_samples), activations,
                                 opts.activation_scales)
    if activations != "dynamic":
        return [], rows
    if opts.weight_only == "auto":
        return most_sensitive(rows or [], opts.weight_only_share), rows
    layers = set(quantizable_layers(model))
    unknown = [name for name in opts.weight_only if name not in layers]
    if unknown:
        raise LlmforgeError(f"quantize.weight_only: {unknown[:3]} are not linear layers of this model (e.g. "
                            f"{sorted(layers)[:2]}, lm_head)")
    return list(opts.weight_only), rows


def _int8(model: Any, tokenizer: Any, opts: QuantizeOptions, calibration: Batches | None) -> Variant:
    activations = "dynamic" if opts.scheme == "int8-dynamic" else "none"
    kernel = resolve_kernel(opts)
    smoothed = None
    if activations == "dynamic" and opts.smoothquant is not None and calibration:
        from llmforge.compress.smooth import smooth

        smooth(model, calibration, opts.smoothquant)
        smoothed = opts.smoothquant
    # Sensitivity is measured on the smoothed model: the one whose layers are quantized.
    weight_only, rows = _sensitive_layers(model, opts, activations, calibration)

    def save(out: Path) -> None:
        int8.save_int8(model, tokenizer, out, activations, opts.activation_scales, weight_only)

    facts: dict[str, Any] = {"activations": activations, "kernel": kernel, "smoothquant_alpha": smoothed}
    if activations == "dynamic":
        facts.update(activation_scales=opts.activation_scales, weight_only_layers=sorted(weight_only))
    if rows is not None:
        facts["sensitivity"] = rows
    return Variant(model, save, facts)


def _half(model: Any, tokenizer: Any, opts: QuantizeOptions, calibration: Batches | None) -> Variant:
    dtype = torch.float16 if opts.scheme == "fp16" else torch.bfloat16
    model = model.to(dtype)
    return Variant(model, _save_dense(model, tokenizer), {"dtype": str(dtype).removeprefix("torch.")})


def load_quantized_on_gpu(model_cfg: ModelConfig, scheme: str) -> Variant:
    """CUDA schemes quantize while loading (transformers' quantizers); save_pretrained keeps the config."""
    quantization = cuda_quantization_config(scheme, f"compress.quantize.scheme={scheme}")
    model, tokenizer = load_model(model_cfg, quantization_config=quantization, merge_adapter=True)
    return Variant(model, _save_dense(model, tokenizer), {"device": "cuda"})


SCHEMES: dict[str, Callable[[Any, Any, QuantizeOptions, Batches | None], Variant]] = {
    "fp16": _half,
    "bf16": _half,
    "int8-dynamic": _int8,
    "int8-weight-only": _int8,
}


def quantize(model: Any, tokenizer: Any, opts: QuantizeOptions, calibration: Batches | None = None) -> Variant:
    """Quantize `model` (modified in place) with `opts.scheme`; `calibration` batches feed SmoothQuant."""
    if opts.scheme not in SCHEMES:
        raise LlmforgeError(f"quantize scheme '{opts.scheme}' is handled elsewhere (see llmforge.compress.runner)")
    return SCHEMES[opts.scheme](model, tokenizer, opts, calibration)
