"""Export a Hugging Face Llama, Mistral, Qwen2, Gemma 2/3, Phi-3 or GPT-2 model to GGUF, for llama.cpp and Ollama.

The glue around PyPI `gguf`'s GGUFWriter: map tensor names, convert each tensor as llama.cpp's graph for its
architecture reads it (`gguf_arch`), pick a type per tensor, embed the tokenizer (`gguf_vocab`) and the chat
template, and stream the tensors to disk one at a time (a model never has to fit in memory twice). An Ollama
`Modelfile` (`ollama`) is written next to the GGUF. Each family is written as llama.cpp's convert_hf_to_gguf.py
writes it:

| family                  | arch   | tensors as llama.cpp's graph reads them    | tokenizer (`tokenizer.ggml.pre`)  |
|-------------------------|--------|--------------------------------------------|-----------------------------------|
| Llama, Llama 3, SmolLM2 | llama  | q/k rows permuted (rope NORM)              | gpt2: gpt-2, llama-bpe            |
| Llama 2, Mistral        | llama  | q/k rows permuted (rope NORM)              | llama (SPM), `▁` prefix (not v0.3)|
| Qwen2, Qwen2.5          | qwen2  | as HF's (NEOX), q/k/v biases               | gpt2: qwen2 (NFC: see gguf_vocab) |
| Gemma 2                 | gemma2 | NEOX, norms + 1, tied, soft-caps, SWA      | llama (SPM), no prefix; eot       |
| Gemma 3 (text)          | gemma3 | NEOX, norms + 1 (q/k norms too), tied, SWA | llama (SPM), no prefix; eot       |
| Phi-3 (4k context)      | phi3   | NEOX, fused attn_qkv, ffn_up = [gate; up]  | llama (SPM), `▁` prefix; eot      |
| GPT-2, DialoGPT         | gpt2   | Conv1D transposed, attn_qkv, position_embd | gpt2: gpt-2; no chat template     |

eot: the end-of-turn token (Gemma's `<end_of_turn>`, Phi-3's `<|end|>`), written as tokenizer.ggml.eot_token_id.
Mistral v0.3's tokenizer (Metaspace) is written without the prefix: llama.cpp then tokenizes as HF every chat
prompt, not plain text that begins with a word (see `gguf_vocab`).

Rope scaling (Phi-3's 128k longrope, Llama 3.1's llama3), Qwen2's use_sliding_window, and configs whose math
llama.cpp would compute differently (Gemma 2/3's query_pre_attn_scalar, which llama.cpp derives from the layer count;
Gemma 3's sliding pattern and local rope base, which its graph fixes at 5:1 and 10k) are refused, naming the family
and what to use instead. Phi-3's and Mistral v0.1's sliding windows are not applied by llama.cpp's phi3/llama graphs
(nor by convert_hf_to_gguf's files): results match transformers within the window.
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
from llmforge.export.gguf_arch import ARCHITECTURES, Arch, Hparams, permute_rope
from llmforge.export.gguf_vocab import Vocab, gguf_name, read_json, read_vocab
from llmforge.export.ollama import render_modelfile

__all__ = ["SUPPORTED_ARCHITECTURES", "available_outtypes", "export_gguf", "permute_rope", "read_params"]

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
class TensorPlan:
    """One tensor to write: where it comes from, its GGUF name, stored shape (rows, cols) and GGML type."""

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
    arch, hp = read_params(model_dir)
    vocab = read_vocab(model_dir, hp.vocab_size, arch.family)
    plan = plan_tensors(gguf, _weight_shapes(model_dir), arch, hp, outtype)
    name = gguf_name(model_dir.resolve().name, vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"model-{outtype}.gguf"
    _atomic_write(path, lambda tmp: _write_gguf(gguf, tmp, name, arch, hp, vocab, plan, outtype))
    modelfile = out_dir / "Modelfile"
    _atomic_write(modelfile, lambda tmp: tmp.write_text(render_modelfile(path.name, vocab, _temperature(model_dir))))
    return {
        "path": str(path),
        "modelfile": str(modelfile),
        "bytes": path.stat().st_size,
        "outtype": outtype,
        "arch": gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]],
        "tensors": len(plan),
        "tensor_types": dict(Counter(t.qtype for t in plan)),
        "seconds": round(time.perf_counter() - start, 3),
        # Mistral v0.3's tokenizer: llama.cpp tokenizes as HF only text that begins with a special token (gguf_vocab)
        "chat_prompts_only": vocab.chat_only,
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


def read_params(model_dir: Path) -> tuple[Arch, Hparams]:
    """The architecture's description and the hyperparameters its reader takes from config.json (and checks)."""
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
    arch = ARCHITECTURES[archs[0]]
    try:
        return arch, arch.read(config, arch.family)
    except KeyError as missing:
        raise LlmforgeError(f"GGUF export of {arch.family} models: {model_dir}/config.json lacks {missing}; "
                            f"re-save the model with save_pretrained") from None


def _temperature(model_dir: Path) -> float:
    return float(read_json(model_dir / "generation_config.json").get("temperature", 0.7))


# ---------------------------------------------------------------------------------------------- tensors


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


def tensor_qtype(gguf_name: str, shape: tuple[int, ...], outtype: str, tied: bool, f32: tuple[str, ...] = ()) -> str:
    """GGML type for one tensor, following llama.cpp: 1-D (norms, biases) and the architecture's `f32` tensors
    (GPT-2's position_embd) stay F32; below 8 bits the output matrix (token_embd when tied) keeps 8 bits
    (llama-quantize would use Q6_K, which gguf-py cannot make)."""
    base = OUTTYPES[outtype][0]
    if len(shape) == 1 or gguf_name in f32:
        return "F32"
    is_output = gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight")
    if base not in _FULL_PRECISION and is_output:
        base = "Q8_0"
    return base


def plan_tensors(
    gguf: Any, shapes: dict[str, tuple[tuple[int, ...], Path]], arch: Arch, hp: Hparams, outtype: str
) -> list[TensorPlan]:
    """Map HF tensor names to GGUF names, stored shapes and types; refuse tensors llama.cpp's graph would not read."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], hp.n_layers)
    plan = []
    for hf_name, (hf_shape, file) in shapes.items():
        if hp.tied and hf_name == "lm_head.weight":
            continue  # tied: llama.cpp reads the output matrix from token_embd
        if hf_name.endswith(("rotary_emb.inv_freq", *arch.skip)):
            continue  # recomputed by llama.cpp (rope frequencies, causal masks)
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise LlmforgeError(
                f"GGUF export of {arch.family} models: tensor '{hf_name}' has no counterpart in llama.cpp's "
                f"{arch.gguf_arch.lower()} graph; use llama.cpp's convert_hf_to_gguf.py if it knows this variant")
        shape = arch.stored_shape(hf_name, hf_shape)
        qtype = tensor_qtype(name, shape, outtype, hp.tied, arch.f32)
        block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
        if shape[-1] % block:
            qtype = "F16"  # rows not a whole number of blocks: convert_hf_to_gguf falls back the same way
        plan.append(TensorPlan(hf_name, file, name, shape, qtype))
    return plan


def _load_tensor(t: TensorPlan, arch: Arch, hp: Hparams) -> np.ndarray:
    """One tensor as float32 numpy, converted as the architecture's llama.cpp graph reads it."""
    from safetensors import safe_open

    with safe_open(str(t.file), framework="pt") as f:
        weight = f.get_tensor(t.hf_name).float().numpy()  # bf16 has no numpy dtype: go through torch
    return arch.convert(t.hf_name, weight, hp)


# ---------------------------------------------------------------------------------------------- writing


def _add_hparams(writer: Any, arch: Arch, hp: Hparams) -> None:
    """The header keys llama.cpp's graph reads; the optional ones only where the architecture's reader set them."""
    writer.add_vocab_size(hp.vocab_size)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_block_count(hp.n_layers)
    writer.add_head_count(hp.n_heads)
    (writer.add_layer_norm_eps if arch.layer_norm else writer.add_layer_norm_rms_eps)(hp.norm_eps)
    optional = (
        (hp.n_kv_heads, writer.add_head_count_kv),
        (hp.key_length, writer.add_key_length),
        (hp.key_length, writer.add_value_length),
        (hp.rope_dims, writer.add_rope_dimension_count),
        (hp.rope_theta if hp.rope_dims is not None else None, writer.add_rope_freq_base),
        (hp.original_context, writer.add_rope_scaling_orig_ctx_len),
        (hp.attn_softcap, writer.add_attn_logit_softcapping),
        (hp.final_softcap, writer.add_final_logit_softcapping),
        (hp.sliding_window, writer.add_sliding_window),
    )
    for value, add in optional:
        if value is not None:
            add(value)


def _add_vocab(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(vocab.add_space_prefix)  # the normalizer's Prepend("▁"), or none (Gemma)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    specials = ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                (vocab.unk_id, writer.add_unk_token_id), (vocab.pad_id, writer.add_pad_token_id),
                (vocab.eot_id, writer.add_eot_token_id))
    for value, add in specials:
        if value is not None:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _write_gguf(gguf: Any, path: Path, name: str, arch: Arch, hp: Hparams, vocab: Vocab, plan: list[TensorPlan],
                outtype: str) -> None:
    """Header and tensor infos first, then each tensor loaded, converted and written on its own."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
    writer.add_name(name)
    writer.add_file_type(int(gguf.LlamaFileType[OUTTYPES[outtype][1]]))
    if OUTTYPES[outtype][0] not in ("F32", "F16", "BF16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, arch, hp)
    _add_vocab(writer, vocab)
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
            weight = _load_tensor(t, arch, hp)
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
