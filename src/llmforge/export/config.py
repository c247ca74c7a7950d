"""`llmforge export`'s config: the deployment formats, their parity checks and quality gate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmforge.config import ModelConfig, QualityGate, Section

ExportFormat = Literal[
    "onnx", "onnx-int8", "onnx-q8", "onnx-int8-static", "gguf-f32", "gguf-f16", "gguf-bf16", "gguf-q8_0", "gguf-q5_1",
    "gguf-q5_0", "gguf-q4_1", "gguf-q4_0", "tensorrt-fp16", "tensorrt-int8",
]

class ExportOptions(Section):
    formats: list[ExportFormat] = Field(
        default_factory=list,
        description="Formats to write: onnx (fp32, KV cache), onnx-int8 (ONNX Runtime dynamic int8), onnx-q8 "
        "(int8 weights in blocks of 32, llama.cpp q8_0's layout, as ONNX Runtime's MatMulNBits), onnx-int8-static (calibrated QDQ), gguf-<type> (llama.cpp / Ollama), tensorrt-fp16/int8 (CUDA).",
    )
    parity_prompts: int = Field(8, ge=1, description="Prompts for the parity check (held-out prompts with data).")
    gate: QualityGate = Field(
        default_factory=lambda: QualityGate(), description="Quality gate for quantized formats (perplexity change "
        "and top-1 agreement against PyTorch on the parity prompts); a format outside it is marked failed.")
    parity_tokens: int = Field(32, ge=1, description="Greedy tokens compared per prompt.")
    calibration_samples: int = Field(64, ge=1, description="Training samples calibrating onnx-int8-static.")
    threads: int | None = Field(None, ge=1, description="CPU threads for the runtimes in the parity check.")
    speed: bool = Field(
        False, description="Also measure batch-1 greedy decode tokens/s of each CPU format against PyTorch fp32 "
        "(best of 1 and 2 threads; GGUF needs the 'llamacpp' extra).",
    )

class ExportConfig(Section):
    """`llmforge export`: the model in the formats users deploy, each proven to behave like the original."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="A full model (merge adapters first).")
    data: Path | None = Field(None, description="Prepared dataset: parity prompts and static int8 calibration.")
    export: ExportOptions = Field(default_factory=lambda: ExportOptions(formats=["onnx", "onnx-int8", "gguf-f16"]))
    output_dir: Path = Field(Path("runs/export"))
