"""`llmforge doctor`: what is installed, what hardware is visible and what 'auto' picks on it, as data (the CLI
renders it)."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

from llmforge.artifacts import package_versions
from llmforge.machine import detect

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
    "registry": ("mlflow", "sqlalchemy", "alembic"),
    "dev": ("pytest", "hypothesis"),
}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def report() -> dict[str, Any]:
    import torch

    cpu = detect()
    devices: dict[str, Any] = {
        "cpu": cpu.model,
        "cpu_flags": " ".join(sorted(cpu.flags)) or "none of avx2, avx512, amx",
        "torch_cpu_capability": cpu.torch_capability,
        "cpu_count": os.cpu_count(),
        "usable_cores": cpu.cores,
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
        "auto": auto_choices(),
        "extras": {name: all(installed(m) for m in modules) for name, modules in EXTRAS.items()},
    }


def auto_choices() -> dict[str, str]:
    """What the 'auto' settings resolve to on this machine, and why (`llmforge.models.cpu`)."""
    from llmforge.models.cpu import cpu_threads, precision_for
    from llmforge.models.loader import default_device, default_dtype

    device = default_device()
    train = precision_for("auto", device)
    weights = str(default_dtype("auto", device, inference=True)).removeprefix("torch.")
    mode = "fp32" if train.name == "fp32" else f"{train.name} autocast over fp32 weights"
    return {
        "device": str(device),
        "train.precision": f"{mode}: {train.reason}",
        "serve dtype (inference weights)": weights,
        "threads (train, serve, ONNX Runtime, llama.cpp)": str(cpu_threads()),
    }
