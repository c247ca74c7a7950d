"""What a model weighs: the bytes of its weight files and of the weights it holds, and the memory of inference, LoRA
and full fine-tuning from its config alone (no weights loaded).

`weight_file_bytes` counts files on disk (a model reference's: `reference.artifact_bytes`); `stored_weights` counts a loaded model's tensors as they
are stored (int8 weights and their scales, tied weights once).

One set of formulas for `llmforge train --dry-run` (which counts a loaded model's parameters) and
`llmforge models` (which counts them on PyTorch's meta device): weights as stored; gradients for trainable weights
at their dtype; AdamW's two fp32 moments (8 bytes) per trainable weight; activations as measured per Llama layer
(`activation_bytes`); with gradient checkpointing, each layer's input plus one layer recomputed at a time.
Inference adds the KV cache: 2 x layers x kv heads x head dim per token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LORA_RANK = 16  # llmforge's default (config.LoraOptions.r), on every linear layer but the output head
LORA_DROPOUT = 0.05  # llmforge's default (config.LoraOptions.dropout)
BF16_BYTES = 2
ADAPTER_BYTES = 4  # peft keeps adapter weights in fp32 over a bf16 base (autocast_adapter_dtype)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".onnx_data", ".pt", ".engine")


def activation_bytes(config: Any, tokens_per_seq: int, batch: int, fp32: bool, checkpointing: bool, *,
                     lora_rank: int | None = None, lora_dropout: float = 0.0, padded: bool = False) -> int:
    """Bytes autograd keeps for the backward pass. Values per token and layer, counted with saved_tensors_hooks on
    Llama layers in fp32 (torch 2.13, SDPA; fitted over widths, depths and lengths to within a few values):
    6h + 2kv + 4I (norms, q/k/v after rotary, attention output, the gated MLP's three I-wide tensors); full
    fine-tuning adds 2h (linear inputs kept for weight gradients), LoRA 7r instead (each adapter's rank-r input);
    LoRA dropout adds 10h + I (a float mask and a dropped copy of each adapter's input); a padding mask adds about
    T + h. Attention never holds a T x T matrix (SDPA's fused kernels), so the cost is linear in T."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inter = getattr(config, "intermediate_size", None) or 4 * h  # GPT-2: n_inner, None meaning 4h
    kv = kv_width(config)
    per_token = 6 * h + 2 * kv + 4 * inter + (7 * lora_rank if lora_rank else 2 * h)
    if lora_rank and lora_dropout:
        per_token += 10 * h + inter
    if padded:
        per_token += tokens_per_seq + h
    width = 4 if fp32 else BF16_BYTES
    tokens = tokens_per_seq * batch
    layer = per_token * tokens * width
    if checkpointing:  # each layer's input is kept; the backward pass recomputes one layer at a time
        return int(layers * h * tokens * width + layer)
    return int(layers * layer)


def kv_width(config: Any) -> int:
    """Values per token of a layer's keys (or values): kv heads x head dim."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(kv_heads * head_dim)


def training_memory(weight_bytes: int, trainable: int, trainable_bytes: int, activations: int,
                    **more: int) -> dict[str, int]:
    """Bytes by part, and their total: weights, gradients, optimizer (AdamW), activations, and any `more` parts
    (the dry run adds the loss's logits and the process's own runtime)."""
    parts = {"weights": weight_bytes, "gradients": trainable_bytes, "optimizer": trainable * 8,
             "activations": activations, **more}
    return {**parts, "total": sum(parts.values())}


def kv_cache_bytes(config: Any, tokens: int, batch: int, bytes_per_value: int = BF16_BYTES) -> int:
    return 2 * config.num_hidden_layers * kv_width(config) * tokens * batch * bytes_per_value


def lora_parameters(model: Any, rank: int = LORA_RANK) -> int:
    """Weights peft's LoRA adds with target_modules='all-linear': rank x (in + out) per linear layer but the head."""
    import torch

    head = model.get_output_embeddings()
    total = 0
    for module in model.modules():
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            total += rank * (module.in_features + module.out_features)
        elif type(module).__name__ == "Conv1D":  # GPT-2's linear layers; weight is (in, out)
            total += rank * sum(module.weight.shape)
    return total


def config_footprint(config: Any, *, seq_len: int = 512, batch: int = 1) -> dict[str, Any]:
    """Parameters and memory of a model built from `config` on the meta device (bf16 weights, AdamW)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter: counted once
    adapters = lora_parameters(model)
    activations = activation_bytes(config, seq_len, batch, fp32=False, checkpointing=False)
    lora_activations = activation_bytes(config, seq_len, batch, fp32=False, checkpointing=False,
                                        lora_rank=LORA_RANK, lora_dropout=LORA_DROPOUT)
    weights = params * BF16_BYTES
    full = training_memory(weights, params, params * BF16_BYTES, activations)
    lora = training_memory(weights + adapters * ADAPTER_BYTES, adapters, adapters * ADAPTER_BYTES, lora_activations)
    return {
        "parameters": params,
        "lora_parameters": adapters,
        "memory_bytes": {"inference": weights + kv_cache_bytes(config, seq_len, batch),
                         "lora": lora["total"], "full": full["total"]},
        "assumptions": {"dtype": "bfloat16", "optimizer": "AdamW (fp32 moments)", "lora_rank": LORA_RANK,
                        "lora_targets": "all-linear", "seq_len": seq_len, "batch": batch,
                        "gradient_checkpointing": False},
    }


def weight_file_bytes(folder: Path) -> int:
    """Bytes of the weight files under `folder` (safetensors, ONNX graphs and data, GGUF, engines)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.name.endswith(WEIGHT_SUFFIXES))


def stored_weights(model: Any) -> tuple[int, int]:
    """(weights, bytes) a model holds: parameters, persistent buffers (int8 weights and scales) and the packed
    weights of torch.ao quantized layers. Tied weights count once, as they are stored."""
    import torch  # here, not at import: the config-only formulas above serve `llmforge models` without it

    seen: set[int] = set()
    alive: list[Any] = []  # keep temporaries referenced so that their ids stay unique
    count = size = 0
    for module in model.modules():
        if getattr(module, "shares_input_embedding", False):  # an int8 lm_head tied to the embedding
            continue
        tensors = [(t, True) for t in module.parameters(recurse=False)]
        tensors += [(b, not n.endswith("_scale")) for n, b in module.named_buffers(recurse=False)
                    if n not in module._non_persistent_buffers_set]  # scales are bytes, not weights
        packed = getattr(module, "_packed_params", None)
        if packed is not None and callable(getattr(module, "weight", None)):
            weight = module.weight()  # the int8 tensor behind fbgemm's packed form
            tensors.append((weight.int_repr(), True))
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                tensors.append((weight.q_per_channel_scales().float(), False))
        for t, is_weight in tensors:
            if id(t) in seen:
                continue
            seen.add(id(t))
            alive.append(t)
            count += t.numel() if is_weight else 0
            size += t.numel() * t.element_size()
    return count, size


def weight_bytes(model: Any) -> int:
    """Bytes of weights read to decode one token (tied embeddings are counted once, as they are stored)."""
    return stored_weights(model)[1]
