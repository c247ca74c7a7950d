"""TensorRT: a serialized engine built from the ONNX export (fp16 or int8), where TensorRT and CUDA exist.

The engine keeps the ONNX graph's inputs (input_ids, attention_mask, position_ids, past key/values) with one
optimization profile covering batch 1..max_batch and sequence/past lengths up to max_len.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from llmforge.errors import LlmforgeError, require
from llmforge.export.onnx import read_onnx_config


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise LlmforgeError("TensorRT engines are built and run on NVIDIA GPUs; this machine has no CUDA device. "
                            "Use onnx or onnx-int8 (ONNX Runtime) or gguf-q8_0 (llama.cpp) on CPUs.")


def build_engine(onnx_dir: Path, out_dir: Path, precision: str = "fp16", max_batch: int = 8,
                 max_len: int = 1024) -> dict[str, Any]:
    """Parse `onnx_dir`'s model and write `out_dir/model.engine`; clear errors without CUDA or TensorRT."""
    require_cuda()
    trt = require("tensorrt", "tensorrt")
    start = time.perf_counter()
    config = read_onnx_config(onnx_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(Path(onnx_dir) / config["model_file"])):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LlmforgeError(f"TensorRT could not parse {onnx_dir}: {errors}")
    build = builder.create_builder_config()
    build.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16 where no int8 kernel exists
    if precision == "int8":
        build.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    kv, hd = config["num_kv_heads"], config["head_dim"]
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name.startswith("past_key_values."):
            profile.set_shape(name, (1, kv, 0, hd), (1, kv, max_len // 2, hd), (max_batch, kv, max_len, hd))
        else:  # (B, T) inputs; attention_mask spans past + new tokens
            profile.set_shape(name, (1, 1), (1, max_len // 2), (max_batch, max_len))
    build.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, build)
    if engine is None:
        raise LlmforgeError(f"TensorRT failed to build a {precision} engine from {onnx_dir} (see its log above)")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.engine"
    tmp = path.with_suffix(".engine.partial")
    tmp.write_bytes(bytes(engine))
    tmp.replace(path)
    return {"engine": path.name, "precision": precision, "tensorrt": trt.__version__,
            "build_seconds": time.perf_counter() - start}
