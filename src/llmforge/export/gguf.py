"""Export a Hugging Face Llama, Mistral or Qwen2 model to GGUF, for llama.cpp and Ollama.

The glue around PyPI `gguf`'s GGUFWriter: map tensor names, permute q/k rows for GGML's rope layout where the
family's llama.cpp graph needs it, pick a type per tensor, embed the byte-level BPE tokenizer (with the name of its
pre-tokenizer as llama.cpp knows it) and the chat template, and stream the tensors to disk one at a time (a model
never has to fit in memory twice). An Ollama `Modelfile` is written next to the GGUF.

| family                           | llama.cpp arch | q/k rope rows   | tokenizer (`tokenizer.ggml.pre`)            |
|----------------------------------|----------------|-----------------|---------------------------------------------|
| Llama, Llama 3, SmolLM2          | llama          | permuted (NORM) | gpt2: gpt-2 (GPT-2 regex), llama-bpe        |
| Llama 2, Mistral (SentencePiece) | llama          | permuted (NORM) | llama (SentencePiece BPE), no pre           |
| Qwen2, Qwen2.5                   | qwen2          | as HF's (NEOX)  | gpt2: qwen2 (Qwen2 regex; NFC: see below)   |

The tokenizer's GGUF form is `gguf_vocab`'s; the Ollama Modelfile is `ollama`'s.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmforge.errors import LlmforgeError, require
from llmforge.export.gguf_vocab import Vocab, read_json, read_vocab
from llmforge.export.ollama import render_modelfile


@dataclass(frozen=True)
class Family:
    """How llama.cpp's graph for one HF architecture wants its tensors."""

    arch: str  # gguf.MODEL_ARCH member
    rope_permute: bool  # HF rotate-half q/k rows -> GGML's interleaved pairs (rope NORM); NEOX reads HF's layout
    qkv_bias: bool  # q/k/v projections carry biases (llama.cpp reads attn_q.bias ...)


ARCHITECTURES = {
    "LlamaForCausalLM": Family("LLAMA", rope_permute=True, qkv_bias=False),
    "MistralForCausalLM": Family("LLAMA", rope_permute=True, qkv_bias=False),  # llama.cpp's converter: llama
    "Qwen2ForCausalLM": Family("QWEN2", rope_permute=False, qkv_bias=True),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)

# outtype -> (GGML tensor type, llama.cpp file type). K-quants appear here only when gguf-py can make them in
# numpy (it cannot today: they need llama.cpp's llama-quantize), see `available_outtypes`.
OUTTYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
    "q6_k": ("Q6_K", "MOSTLY_Q6_K"),
    "q4_k": ("Q4_K", "MOSTLY_Q4_K_S"),
}
_FULL_PRECISION = ("F32", "F16", "BF16", "Q8_0")


@dataclass(frozen=True)
class LlamaParams:
    """The hyperparameters llama.cpp reads, taken from a HF config.json."""

    name: str
    family: Family
    vocab_size: int
    context_length: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    tied: bool


@dataclass(frozen=True)
class TensorPlan:
    """One tensor to write: where it comes from, its GGUF name, logical shape (rows, cols) and GGML type."""

    hf_name: str
    file: Path  # the safetensors file holding it
    gguf_name: str
    shape: tuple[int, ...]
    qtype: str


def export_gguf(model_dir: Path, out_dir: Path, *, outtype: str = "f16") -> dict[str, Any]:
    """Write `out_dir/model-<outtype>.gguf` and an Ollama `Modelfile`; return facts about the export."""
    gguf = require("gguf", "gguf")
    start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    outtype = _check_outtype(gguf, outtype)
    params = read_params(model_dir)
    vocab = read_vocab(model_dir, params.vocab_size)
    plan = plan_tensors(gguf, _weight_shapes(model_dir), params, outtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"model-{outtype}.gguf"
    _atomic_write(path, lambda tmp: _write_gguf(gguf, tmp, params, vocab, plan, outtype))
    modelfile = out_dir / "Modelfile"
    _atomic_write(modelfile, lambda tmp: tmp.write_text(render_modelfile(path.name, vocab, _temperature(model_dir))))
    return {
        "path": str(path),
        "modelfile": str(modelfile),
        "bytes": path.stat().st_size,
        "outtype": outtype,
        "tensors": len(plan),
        "tensor_types": dict(Counter(t.qtype for t in plan)),
        "seconds": round(time.perf_counter() - start, 3),
    }


# ---------------------------------------------------------------------------------------------- checks / config


def available_outtypes(gguf: Any) -> list[str]:
    """The outtypes gguf-py can produce here (a type is offered only if its numpy quantizer exists)."""
    return [name for name, (qtype, _) in OUTTYPES.items() if _can_quantize(gguf, qtype)]


def _can_quantize(gguf: Any, qtype: str) -> bool:
    ggml_type = gguf.GGMLQuantizationType[qtype]
    block, _ = gguf.GGML_QUANT_SIZES[ggml_type]
    try:
        gguf.quants.quantize(np.zeros((1, block), dtype=np.float32), ggml_type)
    except NotImplementedError:
        return False
    return True


def _check_outtype(gguf: Any, outtype: str) -> str:
    outtype = outtype.lower()
    allowed = available_outtypes(gguf)
    if outtype in allowed:
        return outtype
    kquant = "_k" in outtype
    hint = (
        " K-quants (q4_k_m, q5_k_m, q6_k, ...) are made by llama.cpp's llama-quantize from an f16 GGUF: "
        "`llama-quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M`."
    )
    raise LlmforgeError(
        f"GGUF outtype '{outtype}' is not supported; allowed: {', '.join(allowed)}." + (hint if kquant else "")
    )


def read_params(model_dir: Path) -> LlamaParams:
    """Read and check config.json: a supported architecture, its biases, plain rope, no sliding window."""
    if (model_dir / "adapter_config.json").is_file():
        raise LlmforgeError(
            f"{model_dir} is a LoRA/peft adapter, not a full model; GGUF export needs merged weights: "
            "run `llmforge merge` first and export the merged model directory"
        )
    config = read_json(model_dir / "config.json")
    if not config:
        raise LlmforgeError(f"{model_dir} holds no config.json; point the export at a saved model directory")
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    if archs[0] not in ARCHITECTURES:
        raise LlmforgeError(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)} only; {model_dir} is {archs[0]}. "
            "For other architectures use llama.cpp's convert_hf_to_gguf.py"
        )
    family = ARCHITECTURES[archs[0]]
    if not family.qkv_bias and (config.get("attention_bias") or config.get("mlp_bias")):
        raise LlmforgeError(f"{model_dir}: Llama models with attention/MLP biases are not supported by GGUF export")
    if config.get("use_sliding_window"):
        raise LlmforgeError(f"{model_dir}: sliding-window attention is not supported by GGUF export; use llama.cpp's "
                            "convert_hf_to_gguf.py")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise LlmforgeError(
            f"{model_dir}: rope type '{rope.get('rope_type', rope.get('type'))}' is not supported by GGUF export "
            "(only the default rope); use llama.cpp's convert_hf_to_gguf.py"
        )
    n_heads = config["num_attention_heads"]
    return LlamaParams(
        name=model_dir.resolve().name,
        family=family,
        vocab_size=config["vocab_size"],
        context_length=config["max_position_embeddings"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // n_heads,
        rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        rms_eps=float(config.get("rms_norm_eps", 1e-6)),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def _temperature(model_dir: Path) -> float:
    return float(read_json(model_dir / "generation_config.json").get("temperature", 0.7))


# ---------------------------------------------------------------------------------------------- tensors


def permute_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF q/k rows (rotate-half: pairs (i, i + d/2)) -> GGML's interleaved pairs (2i, 2i + 1), per head."""
    rows = weight.shape[0]  # (n_heads * head_dim, hidden)
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])  # (H, 2, D/2, hidden)
        .swapaxes(1, 2)  # (H, D/2, 2, hidden)
        .reshape(weight.shape)
    )


def _weight_files(model_dir: Path) -> list[Path]:
    index = read_json(model_dir / "model.safetensors.index.json")
    if index:
        return sorted({model_dir / f for f in index["weight_map"].values()})
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    raise LlmforgeError(
        f"{model_dir} holds no safetensors weights; re-save the model with save_pretrained(safe_serialization=True)"
    )


def _weight_shapes(model_dir: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in _weight_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = (tuple(f.get_slice(name).get_shape()), file)
    return shapes


def tensor_qtype(gguf_name: str, shape: tuple[int, ...], outtype: str, tied: bool) -> str:
    """GGML type for one tensor, following llama.cpp: 1-D (norms) stay F32; below 8 bits the output matrix
    (token_embd when tied) keeps 8 bits (llama-quantize would use Q6_K, which gguf-py cannot make)."""
    base = OUTTYPES[outtype][0]
    if len(shape) == 1:
        return "F32"
    is_output = gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight")
    if base not in _FULL_PRECISION and is_output:
        base = "Q8_0"
    return base


def plan_tensors(
    gguf: Any, shapes: dict[str, tuple[tuple[int, ...], Path]], params: LlamaParams, outtype: str
) -> list[TensorPlan]:
    """Map HF tensor names to GGUF names and types; refuse tensors llama.cpp's Llama graph would not read."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[params.family.arch], params.n_layers)
    plan = []
    for hf_name, (shape, file) in shapes.items():
        if params.tied and hf_name == "lm_head.weight":
            continue  # tied: llama.cpp reads the output matrix from token_embd
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_theta
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise LlmforgeError(f"tensor '{hf_name}' has no GGUF counterpart for a {params.family.arch.lower()} model; "
                                "cannot export it")
        qtype = tensor_qtype(name, shape, outtype, params.tied)
        block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
        if shape[-1] % block:
            qtype = "F16"  # rows not a whole number of blocks: convert_hf_to_gguf falls back the same way
        plan.append(TensorPlan(hf_name, file, name, shape, qtype))
    return plan


def _load_tensor(t: TensorPlan, params: LlamaParams) -> np.ndarray:
    """One tensor as float32 numpy; q/k rows (weights and biases) permuted where the family's rope needs it."""
    from safetensors import safe_open

    with safe_open(str(t.file), framework="pt") as f:
        weight = f.get_tensor(t.hf_name).float().numpy()  # bf16 has no numpy dtype: go through torch
    if not params.family.rope_permute:
        return weight
    if t.hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
        weight = permute_rope(weight, params.n_heads)
    elif t.hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
        weight = permute_rope(weight, params.n_kv_heads)
    return weight


# ---------------------------------------------------------------------------------------------- writing


def _add_metadata(gguf: Any, writer: Any, params: LlamaParams, vocab: Vocab, outtype: str) -> None:
    writer.add_name(params.name)
    writer.add_file_type(int(gguf.LlamaFileType[OUTTYPES[outtype][1]]))
    if OUTTYPES[outtype][0] not in ("F32", "F16", "BF16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(params.vocab_size)
    writer.add_context_length(params.context_length)
    writer.add_embedding_length(params.hidden_size)
    writer.add_feed_forward_length(params.intermediate_size)
    writer.add_block_count(params.n_layers)
    writer.add_head_count(params.n_heads)
    writer.add_head_count_kv(params.n_kv_heads)
    if params.head_dim != params.hidden_size // params.n_heads:
        writer.add_key_length(params.head_dim)
        writer.add_value_length(params.head_dim)
    writer.add_rope_dimension_count(params.head_dim)
    writer.add_rope_freq_base(params.rope_theta)
    writer.add_layer_norm_rms_eps(params.rms_eps)
    _add_vocab(writer, vocab)


def _add_vocab(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(True)  # the normalizer's Prepend("▁")
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                       (vocab.pad_id, writer.add_pad_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _write_gguf(gguf: Any, path: Path, params: LlamaParams, vocab: Vocab, plan: list[TensorPlan], outtype: str) -> None:
    """Header and tensor infos first, then each tensor loaded, converted and written on its own."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[params.family.arch]])
    _add_metadata(gguf, writer, params, vocab, outtype)
    for t in plan:
        ggml_type = gguf.GGMLQuantizationType[t.qtype]
        block, size = gguf.GGML_QUANT_SIZES[ggml_type]
        nbytes = int(np.prod(t.shape)) // block * size
        writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=ggml_type)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:
            weight = _load_tensor(t, params)
            writer.write_tensor_data(gguf.quants.quantize(weight, gguf.GGMLQuantizationType[t.qtype]))
    finally:
        writer.close()


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a hidden temp name and rename, so a crash never leaves a complete-looking file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


