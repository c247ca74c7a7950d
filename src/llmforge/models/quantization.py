"""Quantizing while loading, on CUDA: the transformers quantization configs of the GPU-only schemes.

One place for QLoRA (`train.method=qlora` loads its base in NF4) and `llmforge compress` (nf4, bnb-int8,
int4-weight-only), so the two cannot drift: NF4 with double quantization and bf16 compute, as the QLoRA paper
(Dettmers et al. 2023) and peft's guides set it.
"""

from __future__ import annotations

from typing import Any

import torch

from llmforge.errors import LlmforgeError, require

CUDA_SCHEMES = ("nf4", "bnb-int8", "int4-weight-only")
CPU_ALTERNATIVES = {
    "train.method=qlora": "On this machine use train.method=lora: the same adapter, trained over a full-precision "
                          "base.",
}
COMPRESS_ALTERNATIVE = ("On this machine use int8-dynamic or int8-weight-only (PyTorch), or export GGUF q4/q8 for "
                        "llama.cpp.")


def cuda_quantization_config(scheme: str, setting: str) -> Any:
    """The transformers quantization config of `scheme`, or an error naming `setting` (the config key that asked
    for it) and what to use instead where there is no CUDA GPU."""
    if scheme not in CUDA_SCHEMES:
        raise LlmforgeError(f"{setting}: '{scheme}' is not a CUDA quantization scheme ({', '.join(CUDA_SCHEMES)})")
    if not torch.cuda.is_available():
        alternative = CPU_ALTERNATIVES.get(setting, COMPRESS_ALTERNATIVE)
        raise LlmforgeError(f"{setting} needs a CUDA GPU: its {scheme} kernels run on CUDA GPUs only. {alternative}")
    if scheme in ("nf4", "bnb-int8"):
        require("bitsandbytes", "gpu")
        from transformers import BitsAndBytesConfig

        if scheme == "nf4":
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
        return BitsAndBytesConfig(load_in_8bit=True)
    require("torchao", "torchao")
    from torchao.quantization import Int4WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(quant_type=Int4WeightOnlyConfig(group_size=128))
