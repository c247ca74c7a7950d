"""One description per Hugging Face architecture of what llama.cpp's graph for it reads, as llama.cpp's own
convert_hf_to_gguf.py writes it: the header keys (`Hparams`, from config.json) and how the tensors are stored.

An `Arch` pairs a config.json reader, which also refuses what that graph would compute differently from
transformers, with declarative tensor rules: q/k rows permuted for rope NORM graphs, Gemma's norm shift, GPT-2's
Conv1D transposes, tensors kept in F32. Adding an architecture is one reader and one row of `ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llmforge.errors import LlmforgeError

CONVERTER = "use llama.cpp's convert_hf_to_gguf.py instead, or export ONNX (-f onnx)"
NO_GGUF = "llama.cpp cannot run this variant; export ONNX (-f onnx) or serve the model directory with transformers"


@dataclass(frozen=True)
class Hparams:
    """The hyperparameters llama.cpp reads from a GGUF header; a key whose value is None is not written."""

    vocab_size: int
    context_length: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None  # None: not written, llama.cpp uses n_heads (GPT-2)
    head_dim: int
    norm_eps: float
    tied: bool  # the output matrix is token_embd
    rope_dims: int | None = None  # None: no rope (GPT-2's learned positions)
    rope_theta: float | None = None
    key_length: int | None = None  # head_dim, where llama.cpp cannot derive it as hidden_size / n_heads
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_window: int | None = None
    original_context: int | None = None  # rope scaling's original context (Phi-3)


@dataclass(frozen=True)
class Arch:
    """How llama.cpp's graph for one HF architecture wants its header and tensors."""

    gguf_arch: str  # gguf.MODEL_ARCH member
    family: str  # the name users know, for messages
    read: Callable[[dict[str, Any], str], Hparams]  # (config.json, family) -> Hparams; refuses what it cannot write
    layer_norm: bool = False  # LayerNorm (eps key layer_norm_epsilon), not RMSNorm (layer_norm_rms_epsilon)
    rope_permute: bool = False  # HF rotate-half q/k rows -> GGML's interleaved pairs (rope NORM); NEOX reads HF's
    norm_shift: float = 0.0  # added to every norm weight: Gemma's RMSNorm scales by (1 + w), llama.cpp's by w
    conv1d: tuple[str, ...] = ()  # tensor-name suffixes HF stores (in, out) in Conv1D: transposed to (out, in)
    skip: tuple[str, ...] = ()  # tensor-name suffixes llama.cpp does not read (masks stored as buffers)
    f32: tuple[str, ...] = ()  # GGUF names kept F32 whatever the outtype, as the converter keeps them

    def stored_shape(self, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[::-1] if hf_name.endswith(self.conv1d) else shape

    def convert(self, hf_name: str, weight: np.ndarray, hp: Hparams) -> np.ndarray:
        """One HF tensor as llama.cpp's graph reads it (float32, same values up to these layout changes)."""
        if hf_name.endswith(self.conv1d):
            weight = weight.T  # (in, out) -> (out, in), nn.Linear's layout, which GGUF stores
        if self.rope_permute and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            weight = permute_rope(weight, hp.n_heads)
        elif self.rope_permute and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            weight = permute_rope(weight, hp.n_kv_heads or hp.n_heads)
        if self.norm_shift and hf_name.endswith("norm.weight"):
            weight = weight + self.norm_shift  # (hidden,)
        return np.ascontiguousarray(weight)


def refuse(family: str, problem: str, instead: str = CONVERTER) -> LlmforgeError:
    return LlmforgeError(f"GGUF export of {family} models: {problem}; {instead}")


def permute_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF q/k rows (rotate-half: pairs (i, i + d/2)) -> GGML's interleaved pairs (2i, 2i + 1), per head."""
    rows = weight.shape[0]  # (n_heads * head_dim, hidden)
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])  # (H, 2, D/2, hidden)
        .swapaxes(1, 2)  # (H, D/2, 2, hidden)
        .reshape(weight.shape)
    )


# ---------------------------------------------------------------------------------------------- config readers


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("rope_parameters") or config.get("rope_scaling") or {}


def _plain_rope(config: dict[str, Any], family: str) -> None:
    rope = _rope(config)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise refuse(family, f"rope type '{kind}' is not written (only the default rope)")


def _decoder(config: dict[str, Any]) -> Hparams:
    """The Llama-style config keys (Llama, Mistral, Qwen2, Gemma 2, Phi-3 share them)."""
    n_heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    return Hparams(
        vocab_size=config["vocab_size"],
        context_length=config["max_position_embeddings"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tied=bool(config.get("tie_word_embeddings", False)),
        rope_dims=head_dim,
        rope_theta=float(_rope(config).get("rope_theta", config.get("rope_theta", 10000.0))),
        key_length=head_dim if head_dim != config["hidden_size"] // n_heads else None,
    )


def _read_llama(config: dict[str, Any], family: str) -> Hparams:
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise refuse(family, "attention/MLP biases are not read by llama.cpp's llama graph")
    _plain_rope(config, family)
    return _decoder(config)


def _read_qwen2(config: dict[str, Any], family: str) -> Hparams:
    if config.get("use_sliding_window"):
        raise refuse(family, "sliding-window attention (use_sliding_window) is not written")
    _plain_rope(config, family)
    return _decoder(config)


def _gemma_graph(config: dict[str, Any], hp: Hparams, family: str, graph: str) -> None:
    """Refuse what llama.cpp's Gemma graphs do not compute: an untied head, another activation, attention
    biases, bidirectional attention."""
    if not hp.tied:
        raise refuse(family, f"an untied lm_head is not read (llama.cpp's {graph} graph uses token_embd)", NO_GGUF)
    act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh" or config.get("attention_bias") or config.get("use_bidirectional_attention"):
        raise refuse(family, f"activation '{act}', attention biases or bidirectional attention differ from "
                     f"llama.cpp's {graph} graph (tanh GELU, no biases, causal)", NO_GGUF)


def _query_scale(config: dict[str, Any], hp: Hparams, family: str, scaled_layers: int) -> None:
    """llama.cpp does not read query_pre_attn_scalar: it scales queries by 1/sqrt(head_dim), or by
    1/sqrt(hidden_size / n_heads) for the model with `scaled_layers` layers (the 27B), as the released ones do."""
    scalar = hp.hidden_size // hp.n_heads if hp.n_layers == scaled_layers else hp.head_dim
    if config.get("query_pre_attn_scalar", scalar) != scalar:
        raise refuse(family, f"query_pre_attn_scalar {config['query_pre_attn_scalar']} is not the {scalar} "
                     f"llama.cpp derives for a {hp.n_layers}-layer model", NO_GGUF)


def _read_gemma2(config: dict[str, Any], family: str) -> Hparams:
    _plain_rope(config, family)
    hp = _decoder(config | {"tie_word_embeddings": config.get("tie_word_embeddings", True)})
    _gemma_graph(config, hp, family, "gemma2")
    softcaps = config.get("attn_logit_softcapping"), config.get("final_logit_softcapping")
    if None in softcaps:
        raise refuse(family, "llama.cpp's gemma2 graph always soft-caps attention and final logits; this "
                     "config turns one off", NO_GGUF)
    # llama.cpp alternates sliding and global layers, the first sliding (its swa pattern 2), as Gemma 2 does
    pattern = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(hp.n_layers)]
    if config.get("layer_types", pattern) != pattern:
        raise refuse(family, "layer_types differ from Gemma 2's alternating sliding/global layers", NO_GGUF)
    _query_scale(config, hp, family, scaled_layers=46)  # the 46-layer 27B
    return replace(hp, key_length=hp.head_dim, attn_softcap=float(softcaps[0]), final_softcap=float(softcaps[1]),
                   sliding_window=int(config["sliding_window"]))


def _read_gemma3(config: dict[str, Any], family: str) -> Hparams:
    """As convert_hf_to_gguf writes Gemma 3: the global layers' rope base, the window, no soft-caps. llama.cpp's
    gemma3 graph takes the rest from its own constants (every sixth layer global, local rope base 10k), so a config
    that differs from them is refused rather than written to compute something else."""
    rope = _rope(config)
    local, full = rope.get("sliding_attention"), rope.get("full_attention")
    if local is None or full is None:  # transformers < 5: flat rope_theta and rope_local_base_freq
        local = {"rope_theta": config.get("rope_local_base_freq", 10000.0)}
        full = rope or {"rope_theta": config.get("rope_theta", 1000000.0)}
    kinds = {str(r.get("rope_type", r.get("type", "default"))) for r in (local, full)}
    if kinds != {"default"}:
        raise refuse(family, f"rope scaling ({', '.join(sorted(kinds - {'default'}))}) is not written (only the "
                     "default rope of the text-only 270M and 1B models)")
    hp = _decoder(config | {"rope_parameters": full, "tie_word_embeddings": config.get("tie_word_embeddings", True)})
    _gemma_graph(config, hp, family, "gemma3")
    if config.get("attn_logit_softcapping") is not None or config.get("final_logit_softcapping") is not None:
        raise refuse(family, "llama.cpp's gemma3 graph does not soft-cap (Gemma 3 does not); this config turns "
                     "soft-capping on", NO_GGUF)
    pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(hp.n_layers)]
    if config.get("layer_types", pattern) != pattern or not config.get("sliding_window"):
        raise refuse(family, "layer_types differ from Gemma 3's five sliding layers to one global, which "
                     "llama.cpp's gemma3 graph assumes", NO_GGUF)
    if float(local.get("rope_theta", 10000.0)) != 10000.0:
        raise refuse(family, f"local rope base {local['rope_theta']} is not the 10000 llama.cpp's gemma3 graph "
                     "uses for sliding layers", NO_GGUF)
    _query_scale(config, hp, family, scaled_layers=62)  # the 62-layer 27B
    return replace(hp, key_length=hp.head_dim, sliding_window=int(config["sliding_window"]))


def _read_phi3(config: dict[str, Any], family: str) -> Hparams:
    rope = _rope(config)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":  # longrope/su (the 128k variants) need rope_factors tensors and an attention factor
        raise refuse(family, f"rope scaling '{kind}' (the long-context variants) is not written")
    hp = _decoder(config)
    if config.get("hidden_act", "silu") != "silu" or hp.key_length is not None:
        raise refuse(family, "only SiLU MLPs with head_dim = hidden_size / num_attention_heads are written")
    factor = float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
    return replace(hp, rope_dims=int(factor * hp.hidden_size) // hp.n_heads,
                   original_context=config.get("original_max_position_embeddings") or hp.context_length,
                   # llama.cpp's phi3 graph attends to the whole context whatever this says (its SWA is off)
                   sliding_window=config.get("sliding_window") or 0)


def _read_gpt2(config: dict[str, Any], family: str) -> Hparams:
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh") or not config.get("scale_attn_weights", True) \
            or config.get("scale_attn_by_inverse_layer_idx") or config.get("add_cross_attention"):
        raise refuse(family, f"activation '{act}' or attention scaling/cross-attention differ from llama.cpp's gpt2 "
                     "graph (tanh GELU, 1/sqrt(head_dim))", NO_GGUF)
    hidden, n_heads = config["n_embd"], config["n_head"]
    return Hparams(
        vocab_size=config["vocab_size"],
        context_length=config["n_positions"],  # = position_embd rows, which llama.cpp checks against it
        hidden_size=hidden,
        intermediate_size=config.get("n_inner") or 4 * hidden,
        n_layers=config["n_layer"],
        n_heads=n_heads,
        n_kv_heads=None,
        head_dim=hidden // n_heads,
        norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
        tied=bool(config.get("tie_word_embeddings", True)),
    )


ARCHITECTURES: dict[str, Arch] = {
    "LlamaForCausalLM": Arch("LLAMA", "Llama", _read_llama, rope_permute=True),
    "MistralForCausalLM": Arch("LLAMA", "Mistral", _read_llama, rope_permute=True),  # the converter: llama
    "Qwen2ForCausalLM": Arch("QWEN2", "Qwen2", _read_qwen2),
    "Gemma2ForCausalLM": Arch("GEMMA2", "Gemma 2", _read_gemma2, norm_shift=1.0),
    "Gemma3ForCausalLM": Arch("GEMMA3", "Gemma 3", _read_gemma3, norm_shift=1.0),  # q_norm and k_norm shifted too
    "Phi3ForCausalLM": Arch("PHI3", "Phi-3", _read_phi3),
    "GPT2LMHeadModel": Arch("GPT2", "GPT-2", _read_gpt2, layer_norm=True,
                            conv1d=(".c_attn.weight", ".c_proj.weight", ".c_fc.weight"),
                            skip=(".attn.bias", ".attn.masked_bias"), f32=("position_embd.weight",)),
}
