"""The int8 artifact: per-channel symmetric int8 weights in safetensors, and the kernels that run them.

On disk (no pickle, `model-int8.safetensors`): every quantized `nn.Linear` weight `W` (O, I) is stored as `<name>.weight` int8 (O, I) plus
`<name>.weight_scale` float32 (O,), with W ~= int8 * scale[:, None]; GPT-2's Conv1D layers, whose weight is (I, O),
are stored the same way (transposed to (O, I)) and run as linear layers. The input embedding is stored the same way
per row (a Gemma-style constant embedding scale is kept), and a tied `lm_head` reuses it; further embedding tables
(GPT-2's learned positions) are stored per row too (`embeddings` in the config). Everything else (norms, biases)
stays float. `config.json` carries `quantization_config = {"quant_method": "llmforge", ...}`: llmforge reloads it
with `load_int8`, and plain transformers refuses it (unknown quant_method) instead of silently loading int8 numbers
as floats.

Kernels chosen at load time (`kernel`), all from the same file:
* `torch`, activations `dynamic` with `activation_scales: per-token` (the default): each row of the input gets its own
  symmetric int8 scale and `torch._int_mm` multiplies int8 x int8 -> int32 (oneDNN / VNNI); a token's outliers no
  longer flatten every other token's activations, and a row's result does not depend on the rest of its batch.
  `per-tensor` (files written before per-token scales existed): `torch.ao` dynamic Linear (fbgemm, one scale per
  call). With activations `none`: `torch._weight_int8pack_mm` (int8 weights, float activations).
* `weight_only` in the quantization config names layers too sensitive for int8 activations (chosen by
  `llmforge.compress.sensitivity`): they keep float activations with the same int8 weights, so the file is the same
  size.
* `torchao`: torchao's `Int8DynamicActivationInt8WeightConfig` / `Int8WeightOnlyConfig` (the `torchao` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from llmforge.errors import LlmforgeError, require

QUANT_METHOD = "llmforge"
# Not `model.safetensors`: plain transformers ignores an unknown quant_method, and would otherwise load the int8
# numbers as float weights; without its weights file it refuses the directory instead.
WEIGHTS_FILE = "model-int8.safetensors"
FORMAT = "int8-per-channel-symmetric"
KERNELS = ("torch", "torchao")
# Measured by benchmarks/compress.py on this project's CPUs: torch's own int8 kernels beat torchao's there.
DEFAULT_CPU_KERNEL = "torch"
# torch._weight_int8pack_mm's time grows linearly with the rows (measured on AVX-512 EPYC, torch 2.13: at 8 rows
# of a 49k x 576 head it was already slower than dequantize + fp32 GEMM, and 40x slower at 256 rows).
INT8PACK_MAX_ROWS = 4


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, I) float -> (int8 (O, I), float32 scale (O,)), symmetric per output channel, range [-127, 127]."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (O,)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (O, I)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]  # (O, I)


class Int8Embedding(nn.Module):
    """Embedding lookup from int8 rows: only the looked-up rows are dequantized. `embed_scale`: a constant the
    family multiplies its embeddings by (Gemma: sqrt(hidden_size)); the tied head shares the unscaled rows."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None,
                 embed_scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("weight_int8", q)  # (V, H)
        self.register_buffer("weight_scale", scale)  # (V,)
        self.padding_idx = padding_idx
        self.embed_scale = embed_scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].float() * (self.weight_scale[ids] * self.embed_scale).unsqueeze(-1)  # (..., H)


def _embed_scale(embedding: nn.Module) -> float:
    """The constant a scaled embedding (Gemma's) multiplies its output by; 1 for a plain nn.Embedding."""
    scale = getattr(embedding, "scalar_embed_scale", None)
    scale = getattr(embedding, "embed_scale", None) if scale is None else scale
    return 1.0 if scale is None else float(scale)


class _Int8Weights(nn.Module):
    """Per-output-channel int8 weights and their scales; subclasses say how activations meet them."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = q.shape[1], q.shape[0]
        self.register_buffer("weight_int8", q)  # (O, I)
        self.register_buffer("weight_scale", scale)  # (O,)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)


class Int8WeightOnlyLinear(_Int8Weights):
    """y = x @ (int8 W * scale).T + b with torch's fused int8-weight kernel; activations stay float."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (N, I)
        if len(flat) <= INT8PACK_MAX_ROWS:
            y = torch._weight_int8pack_mm(flat, self.weight_int8, self.weight_scale)  # (N, O)
        else:  # int8pack's CPU kernel is a loop of GEMVs: for prefill, one dequantized fp32 GEMM is faster
            y = F.linear(flat, self.weight_int8.float()) * self.weight_scale  # (N, O)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


class PerTokenInt8Linear(_Int8Weights):
    """y = (int8(x / s_x) @ int8 W.T) * s_x * s_w + b: activations quantized per row (token) at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (N, I)
        # Few passes over the activations: at small widths these elementwise steps cost more than the GEMM.
        peak = torch.linalg.vector_norm(flat, ord=float("inf"), dim=1, keepdim=True).clamp_(min=1e-10)  # (N, 1)
        xq = (flat * (127 / peak)).round_().to(torch.int8)  # (N, I); |values| <= 127 by construction
        acc = torch._int_mm(xq, self.weight_int8.t())  # (N, O) int32
        y = torch.mul(acc, peak / 127).mul_(self.weight_scale)  # (N, O) float32
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def _dynamic_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear

    out_features, in_features = q.shape
    with warnings.catch_warnings():  # torch.ao quantization is deprecated in favour of torchao, which is slower here
        warnings.simplefilter("ignore")
        layer = Linear(in_features, out_features, bias_=bias is not None, dtype=torch.qint8)
        zero = torch.zeros(out_features, dtype=torch.long)
        weight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        layer.set_weight_bias(weight, None if bias is None else bias.detach().float())
    return layer


def runtime_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, activations: str,
                   kernel: str, activation_scales: str = "per-token") -> nn.Module:
    """A module computing the int8 linear layer with the chosen kernel."""
    if kernel == "torchao":
        require("torchao", "torchao")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        layer = nn.Linear(q.shape[1], q.shape[0], bias=bias is not None)
        layer.weight.data = dequantize(q, scale)  # re-quantizing these values gives back the same int8 weights
        if bias is not None:
            layer.bias.data = bias.detach().float()
        wrapper = nn.Sequential(layer)
        config = Int8DynamicActivationInt8WeightConfig() if activations == "dynamic" else Int8WeightOnlyConfig()
        quantize_(wrapper, config)
        return wrapper[0]
    if activations == "dynamic":
        if activation_scales == "per-token":
            return PerTokenInt8Linear(q, scale, bias)
        return _dynamic_linear(q, scale, bias)
    return Int8WeightOnlyLinear(q, scale, bias)


def _linear_names(model: nn.Module) -> list[str]:
    """The linear layers (nn.Linear, GPT-2's Conv1D) inside the transformer blocks (lm_head is handled with the
    embedding)."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and m is not head]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantized_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to save (int8 weights + scales, other tensors as they are) and the quantization config."""
    from transformers.pytorch_utils import Conv1D

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    linears = _linear_names(model)
    emb_name = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())
    tables = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and n != emb_name]  # GPT-2's wpe
    quantized = {f"{n}.weight" for n in [*linears, emb_name, *tables]}
    conv1d = {f"{n}.weight" for n in linears if isinstance(model.get_submodule(n), Conv1D)}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        if name in quantized:
            q, scale = quantize_weight(tensor.t() if name in conv1d else tensor)  # (O, I) for both layouts
            tensors[name], tensors[name + "_scale"] = q.contiguous(), scale.contiguous()
        else:
            tensors[name] = tensor.detach().contiguous()
    if not tied:  # an untied head is quantized like any linear layer
        linears.append("lm_head")
        q, scale = quantize_weight(model.state_dict()["lm_head.weight"])
        tensors["lm_head.weight"], tensors["lm_head.weight_scale"] = q.contiguous(), scale.contiguous()
    config = {"quant_method": QUANT_METHOD, "format": FORMAT, "bits": 8, "embedding": emb_name, "embeddings": tables,
              "modules": sorted(linears)}
    return tensors, config


def save_int8(model: nn.Module, tokenizer: Any, out_dir: Path, activations: str,
              activation_scales: str = "per-token", weight_only: list[str] | None = None) -> dict[str, Any]:
    """Write config.json (with its quantization_config), the int8 safetensors and the tokenizer.
    `weight_only`: layers that keep float activations when `activations` is dynamic."""
    from safetensors.torch import save_file

    tensors, qconfig = quantized_state(model)
    qconfig["activations"] = activations
    if activations == "dynamic":
        qconfig["activation_scales"] = activation_scales
        qconfig["weight_only"] = sorted(weight_only or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "quantization": FORMAT})
    config = model.config.to_dict()
    config["quantization_config"] = qconfig
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return qconfig


def is_int8_dir(path: Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        qconfig = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}
    except (UnicodeDecodeError, ValueError, AttributeError):  # not ours to judge: the loader names the broken file
        return False
    return qconfig.get("quant_method") == QUANT_METHOD


def load_int8(path: Path, kernel: str = DEFAULT_CPU_KERNEL) -> nn.Module:
    """Rebuild the model from config.json and the int8 safetensors, with `kernel` computing the linear layers."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    if kernel not in KERNELS:
        raise LlmforgeError(f"int8 kernel '{kernel}' is not one of {', '.join(KERNELS)}")
    raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    qconfig = raw.pop("quantization_config")
    if qconfig.get("format") != FORMAT:
        raise LlmforgeError(f"{path}: unsupported llmforge quantization format {qconfig.get('format')!r}")
    config = AutoConfig.for_model(**raw)
    with no_init_weights():  # every weight comes from the file
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_file(str(Path(path) / WEIGHTS_FILE))
    emb = qconfig["embedding"]
    tables = [emb, *qconfig.get("embeddings", [])]  # files from before learned positions were int8: none
    quantized = {name: (tensors.pop(f"{name}.weight"), tensors.pop(f"{name}.weight_scale"),
                        tensors.pop(f"{name}.bias", None)) for name in [*qconfig["modules"], *tables]}
    # Float tensors (norms, biases) go in first: quantized modules read their own keys when loading.
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    expected_missing = ({"lm_head.weight"} | {f"{name}.weight" for name in quantized}
                        | {f"{name}.bias" for name, (_, _, bias) in quantized.items() if bias is not None})
    if set(missing) - expected_missing or unexpected:
        raise LlmforgeError(f"{path}: {WEIGHTS_FILE} does not match config.json (missing "
                            f"{sorted(set(missing) - expected_missing)[:5]}, unexpected {unexpected[:5]})")
    scales = qconfig.get("activation_scales", "per-tensor")  # files from before per-token scales: fbgemm
    weight_only = set(qconfig.get("weight_only", []))

    def linear(name: str, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        activations = "none" if name in weight_only else qconfig["activations"]
        return runtime_linear(weight, weight_scale, bias, activations, kernel, scales)

    for name in tables:
        table = model.get_submodule(name)
        weight, weight_scale, _ = quantized.pop(name)
        _set_module(model, name, Int8Embedding(weight, weight_scale, getattr(table, "padding_idx", None),
                                                 _embed_scale(table)))
    if getattr(config, "tie_word_embeddings", False):
        embedding = model.get_submodule(emb)
        head = linear("lm_head", embedding.weight_int8, embedding.weight_scale, None)
        head.shares_input_embedding = True  # stored once on disk; counted once
        _set_module(model, "lm_head", head)
    for name, (weight, weight_scale, bias) in quantized.items():
        _set_module(model, name, linear(name, weight, weight_scale, bias))
    model.config.quantization = qconfig  # visible to callers, not written back as a transformers quantizer
    return model.eval()
