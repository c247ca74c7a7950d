"""`llmforge doctor`: what is installed and what hardware is visible, as data (the CLI renders it)."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

from llmforge.artifacts import package_versions

EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "gguf": ("gguf",),
    "llamacpp": ("llama_cpp",),
    "gpu": ("bitsandbytes",),
    "torchao": ("torchao",),
    "tensorrt": ("tensorrt",),
    "deepspeed": ("deepspeed",),
    "serve": ("fastapi", "uvicorn", "prometheus_client", "openai"),
    "eval": ("rouge_score",),
    "lmeval": ("lm_eval",),
    "tune": ("optuna",),
    "tracking": ("tensorboard",),
    "dev": ("pytest", "hypothesis"),
}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def report() -> dict[str, Any]:
    import torch

    devices: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        devices["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        devices["bf16"] = torch.cuda.is_bf16_supported()
    return {
        "versions": package_versions(),
        "platform": platform.platform(),
        "devices": devices,
        "extras": {name: all(installed(m) for m in modules) for name, modules in EXTRAS.items()},
    }
