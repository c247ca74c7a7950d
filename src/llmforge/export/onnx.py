"""Export a Hugging Face causal LM to ONNX with a KV cache, and quantize the result to int8 with ONNX Runtime.

optimum-onnx 0.1.0 requires transformers<4.58 (no environment with transformers 5), so the graph comes from
`torch.onnx.export(..., dynamo=True)` over a small wrapper: flat past key/value inputs become a transformers
`DynamicCache`, and the cache the model returns is flattened back into `present.*` outputs.

An export directory holds everything a runtime needs, with no guessing:
  model.onnx + model.onnx_data   the graph; weights always as external data (the 2 GB protobuf limit)
  onnx_config.json               input/output names and shapes, layers, kv heads, head_dim, dtype, opset
  config.json, tokenizer files   the Hugging Face config, generation config and tokenizer, unchanged
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.errors import LlmforgeError, require
from llmforge.models.ort import CONFIG_FILE, DATA_FILE, FORMAT, MODEL_FILE, Q8_METHOD, read_onnx_config


def past_name(layer: int, kind: str) -> str:
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"


# --- the traced module ---------------------------------------------------------------------------------------


class _KVCacheWrapper(torch.nn.Module):
    """(input_ids, attention_mask, position_ids, k0, v0, k1, v1, ...) -> (logits, k0', v0', ...)."""

    def __init__(self, model: torch.nn.Module, num_layers: int) -> None:
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)]  # each (B, kv, P, hd)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=DynamicCache(ddp_cache_data=pairs), use_cache=True)
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]  # each (B, kv, P+T, hd)
        return (out.logits, *present)  # logits (B, T, V)


def _refuse_adapter(model: Any) -> None:
    if hasattr(model, "peft_config"):  # a PeftModel, or a model with peft adapters injected
        raise LlmforgeError(
            "this model carries a peft adapter (LoRA/DoRA); ONNX export needs plain weights. Merge it first with "
            "`llmforge merge ADAPTER_RUN --output MERGED_DIR`, then export MERGED_DIR."
        )


def _shape_facts(config: Any) -> dict[str, int]:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = cfg.num_attention_heads
    return {
        "num_layers": cfg.num_hidden_layers,
        "num_attention_heads": heads,
        "num_kv_heads": getattr(cfg, "num_key_value_heads", None) or heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "vocab_size": cfg.vocab_size,
    }


def _io_names(num_layers: int) -> tuple[list[str], list[str]]:
    kv = [(i, k) for i in range(num_layers) for k in ("key", "value")]
    inputs = ["input_ids", "attention_mask", "position_ids"] + [past_name(i, k) for i, k in kv]
    outputs = ["logits"] + [present_name(i, k) for i, k in kv]
    return inputs, outputs


def _io_spec(facts: dict[str, int]) -> dict[str, Any]:
    kv_shape = ["batch", facts["num_kv_heads"], "past_sequence", facts["head_dim"]]
    present_shape = ["batch", facts["num_kv_heads"], "past_sequence + sequence", facts["head_dim"]]
    inputs, outputs = _io_names(facts["num_layers"])
    shapes = {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "past_sequence + sequence"],
              "position_ids": ["batch", "sequence"], "logits": ["batch", "sequence", facts["vocab_size"]]}
    return {
        "inputs": {n: {"dtype": "float32" if n.startswith("past") else "int64", "shape": shapes.get(n, kv_shape)}
                   for n in inputs},
        "outputs": {n: {"dtype": "float32", "shape": shapes.get(n, present_shape)} for n in outputs},
        "first_step": "feed every past_key_values.* with past_sequence = 0, shape (batch, kv_heads, 0, head_dim)",
        "padding": "left; attention_mask is 0 on pads, position_ids = cumsum(attention_mask) - 1 (pads: any value)",
    }


def _trace(model: torch.nn.Module, facts: dict[str, int]) -> Any:
    """Run the dynamo exporter and return the ONNXProgram.

    The exporter always runs onnxscript's optimizer (constant folding, dead code): it is cheap and every later
    step (ORT, quantization) reads a smaller graph. An empty past (length 0) needs no special graph: concatenating
    a (B, kv, 0, hd) tensor is valid ONNX, so the first step feeds zero-length past tensors.
    """
    b, t, p = 2, 3, 4  # sizes of 0 or 1 would be specialised by torch.export: trace with distinct sizes >= 2
    device = next(model.parameters()).device
    layers, kv, hd = facts["num_layers"], facts["num_kv_heads"], facts["head_dim"]
    past = tuple(torch.zeros(b, kv, p, hd, device=device) for _ in range(2 * layers))  # each (B, kv, P, hd)
    ids = torch.ones(b, t, dtype=torch.long, device=device)  # (B, T)
    mask = torch.ones(b, p + t, dtype=torch.long, device=device)  # (B, P+T)
    positions = torch.arange(p, p + t, device=device).expand(b, t)  # (B, T)
    dim = torch.export.Dim
    batch, seq, past_seq, total = dim("batch"), dim("sequence"), dim("past_sequence"), dim("total_sequence")
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
               tuple({0: batch, 2: past_seq} for _ in past))
    inputs, outputs = _io_names(layers)
    with torch.no_grad():
        return torch.onnx.export(
            _KVCacheWrapper(model, layers).eval(), (ids, mask, positions, *past), dynamo=True,
            dynamic_shapes=dynamic, input_names=inputs, output_names=outputs, optimize=True, verbose=False,
        )


def _ort_optimize(src: Path, dst_dir: Path) -> None:
    """ONNX Runtime's offline graph optimization at the basic level, saved with external data to dst_dir.

    Measured on the 5M demo model (1 thread, batch-1 decode step): basic and extended run at the same speed
    (~1.0 ms fp32, ~0.53 ms int8), as the session applies its extended fusions at load time anyway; basic stays
    portable (no EP-specific contrib ops) and quantizable. What the pass buys: session load 0.24 -> 0.11 s, and
    constant folding turns the tied lm_head's Transpose into a weight, so dynamic int8 quantizes that MatMul
    too: int8 decode 181 -> 291 tok/s. The cost is a transposed copy of a tied embedding in the file (21 -> 29 MB
    on the demo model), which ORT would build in memory at load time anyway.
    """
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst_dir / MODEL_FILE)
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "256")
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def _write_graph(program: Any, out_dir: Path, optimize: bool) -> None:
    ir = require("onnx_ir", "onnx")
    for name in (MODEL_FILE, DATA_FILE):
        (out_dir / name).unlink(missing_ok=True)
    if not optimize:
        ir.save(program.model, out_dir / MODEL_FILE, external_data=DATA_FILE)
        return
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        raw = Path(tmp) / "raw.onnx"
        ir.save(program.model, raw, external_data="raw.onnx_data")
        optimized = Path(tmp) / "optimized"
        optimized.mkdir()
        _ort_optimize(raw, optimized)
        for name in (MODEL_FILE, DATA_FILE):
            shutil.move(str(optimized / name), out_dir / name)


def _opset(model_path: Path) -> int:
    onnx = require("onnx", "onnx")
    proto = onnx.load(str(model_path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _write_onnx_config(out_dir: Path, facts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    config = {"format": FORMAT, "model_file": MODEL_FILE, "data_file": DATA_FILE, **facts,
              **_io_spec(facts), **extra}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return config


def export_onnx(model: Any, tokenizer: Any, out_dir: Path, *, optimize: bool = True) -> dict[str, Any]:
    """Write `model` (a fp32 HF causal LM) to out_dir as model.onnx with KV cache inputs/outputs.

    `optimize` adds ONNX Runtime's offline basic-level pass (see `_ort_optimize`) after onnxscript's optimizer.
    """
    _refuse_adapter(model)
    require("onnxscript", "onnx")
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise LlmforgeError(f"ONNX export writes fp32 graphs; this model is {dtype}. Load it with dtype 'float32'.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = _shape_facts(model.config)
    start = time.perf_counter()
    program = _trace(model, facts)
    traced = time.perf_counter()
    _write_graph(program, out_dir, optimize)
    done = time.perf_counter()
    model.config.save_pretrained(str(out_dir))
    if getattr(model, "generation_config", None) is not None:  # its eos list: end-of-turn tokens (Phi-3, Gemma)
        model.generation_config.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    extra = {"dtype": "float32", "opset": _opset(out_dir / MODEL_FILE), "quantization": None,
             "graph_optimization": "onnxscript+ort-basic" if optimize else "onnxscript",
             "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = _write_onnx_config(out_dir, facts, extra)
    return {"dir": str(out_dir), "files": _files(out_dir), "opset": config["opset"],
            "export_seconds": round(traced - start, 2), "optimize_seconds": round(done - traced, 2),
            "bytes": _graph_bytes(out_dir)}


# --- int8 ------------------------------------------------------------------------------------------------------


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def _graph_bytes(directory: Path) -> int:
    return sum((directory / n).stat().st_size for n in (MODEL_FILE, DATA_FILE) if (directory / n).exists())


def _prepare_dst(src_dir: Path, dst_dir: Path) -> dict[str, Any]:
    config = read_onnx_config(src_dir)
    if dst_dir.resolve() == src_dir.resolve():
        raise LlmforgeError(f"quantizing {src_dir} into itself would overwrite the fp32 model; pick another dir")
    dst_dir.mkdir(parents=True, exist_ok=True)
    return config


def _copy_side_files(src_dir: Path, dst_dir: Path) -> None:
    """Config and tokenizer files, whatever the tokenizer calls them: every file but the graph's own."""
    for path in src_dir.iterdir():
        if path.is_file() and path.name not in (MODEL_FILE, DATA_FILE, CONFIG_FILE):
            shutil.copy2(path, dst_dir / path.name)


def _weight_nodes(model_path: Path) -> list[str]:
    """MatMul nodes with a weight on the right, and Gathers from a weight table (the embedding).

    Attention's activation x activation MatMuls stay fp32: their ranges move with every prompt.
    """
    onnx = require("onnx", "onnx")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if (n.op_type == "MatMul" and n.input[1] in weights)
            or (n.op_type == "Gather" and n.input[0] in weights)]


def _finish_int8(src_dir: Path, dst_dir: Path, quantized: Path, quantization: dict[str, Any],
                 seconds: float) -> dict[str, Any]:
    ir = require("onnx_ir", "onnx")
    for name in (MODEL_FILE, DATA_FILE):
        (dst_dir / name).unlink(missing_ok=True)
    ir.save(ir.load(quantized), dst_dir / MODEL_FILE, external_data=DATA_FILE)
    _copy_side_files(src_dir, dst_dir)
    config = read_onnx_config(src_dir)
    config["quantization"] = quantization
    (dst_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return {"dir": str(dst_dir), "files": _files(dst_dir), "opset": config["opset"], "quantization": quantization,
            "seconds": round(seconds, 2), "bytes": _graph_bytes(dst_dir), "source_bytes": _graph_bytes(src_dir)}


def quantize_onnx_int8(src_dir: Path, dst_dir: Path) -> dict[str, Any]:
    """Dynamic int8: weights int8 per output channel, activations quantized on the fly (uint8)."""
    quant = require("onnxruntime.quantization", "onnx")
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    _prepare_dst(src_dir, dst_dir)
    # The avx2 config (U8 activations, S8 weights, 7-bit weight range), for our AVX2 CPUs without VNNI: there
    # MLAS multiplies with VPMADDUBSW, whose int16 sums saturate on full-range int8 weights; reduce_range avoids
    # that (ORT's guidance for non-VNNI x86), and per-channel scales win back the accuracy the lost bit costs.
    # Gather (the embedding table) is stored int8 too; attention's activation x activation MatMuls stay fp32.
    settings = {"method": "int8-dynamic", "weight_type": "int8", "activation_type": "uint8",
                "per_channel": True, "reduce_range": True, "ops": ["MatMul", "Gather"]}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dst_dir) as tmp:
        out = Path(tmp) / MODEL_FILE
        quant.quantize_dynamic(
            src_dir / MODEL_FILE, out, op_types_to_quantize=settings["ops"], per_channel=True, reduce_range=True,
            weight_type=quant.QuantType.QInt8, use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},
        )
        return _finish_int8(src_dir, dst_dir, out, settings, time.perf_counter() - start)


Q8_BLOCK = 32


def quantize_onnx_q8(src_dir: Path, dst_dir: Path) -> dict[str, Any]:
    """int8 weights in blocks of 32 along the input dimension, one fp32 scale per block (llama.cpp q8_0's
    layout), run by ONNX Runtime's MatMulNBits with int8 compute (accuracy_level 4: each block of activations is
    quantized too, per block, not per tensor).

    Why beside onnx-int8: MatMulInteger quantizes a whole activation tensor with one scale, and a model with
    outlier channels loses too much there (SmolLM2-135M: perplexity +30%, top-1 57%, gate failed); a scale per
    32 values keeps the outliers local (SmolLM2 through `llmforge export`: top-1 97.3%, perplexity +1.8%, gate
    passed; batch-1 decode 1.5x ONNX fp32's; benchmarks/NOTES.md). Every MatMul with a weight, the output head included; the embedding table
    (Gather) stays fp32.
    """
    onnx = require("onnx", "onnx")
    nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", "onnx")
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    _prepare_dst(src_dir, dst_dir)
    settings = {"method": Q8_METHOD, "weight_type": "int8", "block_size": Q8_BLOCK, "symmetric": True,
                "compute": "int8 (accuracy_level 4)", "ops": ["MatMul"]}
    start = time.perf_counter()
    config = nbits.DefaultWeightOnlyQuantConfig(block_size=Q8_BLOCK, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(src_dir / MODEL_FILE)), bits=8, block_size=Q8_BLOCK,
                                           is_symmetric=True, accuracy_level=4, algo_config=config)
    quantizer.process()
    with tempfile.TemporaryDirectory(dir=dst_dir) as tmp:
        out = Path(tmp) / MODEL_FILE
        onnx.save_model(quantizer.model.model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE)
        return _finish_int8(src_dir, dst_dir, out, settings, time.perf_counter() - start)


def _calibration_feeds(calibration: list[list[int]], facts: dict[str, Any]) -> list[dict[str, Any]]:
    """One prefill step per sequence: batch 1, no padding, an empty (length 0) past."""
    empty = np.zeros((1, facts["num_kv_heads"], 0, facts["head_dim"]), dtype=np.float32)  # (1, kv, 0, hd)
    feeds = []
    for ids in calibration:
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None]}
        feed.update({past_name(i, k): empty for i in range(facts["num_layers"]) for k in ("key", "value")})
        feeds.append(feed)
    return feeds


def quantize_onnx_static(src_dir: Path, dst_dir: Path, calibration: list[list[int]]) -> dict[str, Any]:
    """Static QDQ int8: activation ranges calibrated (min/max) on prefill runs over `calibration` token ids.

    Measured on the 5M demo model (1 thread, batch-1 decode step): static ~0.57 ms vs dynamic ~0.53 ms, same
    file size, slightly larger logit error (its ranges come from prefill only). Dynamic int8 stays the default;
    static QDQ is for runtimes that want fixed activation scales.
    """
    quant = require("onnxruntime.quantization", "onnx")
    if not calibration or not all(calibration):
        raise LlmforgeError("static int8 quantization needs at least one non-empty calibration sequence")
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    facts = _prepare_dst(src_dir, dst_dir)
    settings = {"method": "int8-static-qdq", "weight_type": "int8", "activation_type": "uint8",
                "per_channel": True, "reduce_range": True, "ops": ["MatMul", "Gather"], "calibration": len(calibration),
                "calibrate_method": "minmax"}
    reader = _ListReader(_calibration_feeds(calibration, facts))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dst_dir) as tmp:
        out = Path(tmp) / MODEL_FILE
        quant.quantize_static(
            src_dir / MODEL_FILE, out, reader, quant_format=quant.QuantFormat.QDQ,
            nodes_to_quantize=_weight_nodes(src_dir / MODEL_FILE), per_channel=True, reduce_range=True,
            activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
            use_external_data_format=True,
        )
        return _finish_int8(src_dir, dst_dir, out, settings, time.perf_counter() - start)


class _ListReader:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)
