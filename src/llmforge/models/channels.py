"""Which channels and heads of a transformer block matter, and how to keep only some of them, for each layout.

Shared by structured pruning (`llmforge.compress.structured`) and by distillation, which derives a narrower
student from its teacher (`llmforge.train.distill`). Importance is `magnitude` (weight norms of the unit's rows and
columns) or, given calibration activations, mean |activation| times the norm of the unit's output weights.

Families differ in where the units live, not in what they are; a `Layout` says where:
* an MLP's intermediate channels are rows of its input projections (Llama's gate_proj and up_proj; Phi-3's fused
  gate_up_proj holds gate rows then up rows) and columns of its output projection;
* an attention head is rows of the q, k, v projections (separate in Llama, fused q|k|v in Phi-3's qkv_proj and
  GPT-2's c_attn) and columns of the output projection.
GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear's (out, in): `rows` below always mean
output features. Biases go with their rows. Norms are over the hidden size, which pruning leaves alone (so
Gemma 2's extra norms need nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from llmforge.errors import LlmforgeError

Projection = nn.Linear | Conv1D


@dataclass(frozen=True)
class Layout:
    """Where one family keeps the units pruning removes; module paths are relative to a block (or its MLP / attention).

    `mlp_in` and `qkv` list (projection, its row segments in order): a count of (I,) blocks for the MLP, a string of
    segments for attention ("q", "k", "v"; "qkv" is a fused projection)."""

    blocks: str  # the ModuleList of transformer blocks, from the model
    mlp: str
    mlp_in: tuple[tuple[str, int], ...]
    mlp_out: str
    attn: str
    qkv: tuple[tuple[str, str], ...]
    attn_out: str
    width: str = "intermediate_size"  # the config key of the MLP width
    # False where the config cannot describe fewer heads: GPT-2 derives the head width as n_embd / n_head.
    head_config: bool = True


LLAMA = Layout(blocks="model.layers", mlp="mlp", mlp_in=(("gate_proj", 1), ("up_proj", 1)), mlp_out="down_proj",
               attn="self_attn", qkv=(("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v")), attn_out="o_proj")
PHI3 = Layout(blocks="model.layers", mlp="mlp", mlp_in=(("gate_up_proj", 2),), mlp_out="down_proj",
              attn="self_attn", qkv=(("qkv_proj", "qkv"),), attn_out="o_proj")
GPT2 = Layout(blocks="transformer.h", mlp="mlp", mlp_in=(("c_fc", 1),), mlp_out="c_proj", attn="attn",
              qkv=(("c_attn", "qkv"),), attn_out="c_proj", width="n_inner", head_config=False)
# model_type -> layout. Qwen2's q/k/v biases, Gemma 2's extra norms and soft-capping and Gemma 3's q/k norms (one
# (head_dim,) weight shared by every head, so fewer heads leave it as it is) fit Llama's layout.
LAYOUTS: dict[str, Layout] = {"llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA, "gemma2": LLAMA,
                              "gemma3_text": LLAMA, "phi3": PHI3, "gpt2": GPT2}


def layout_of(config: object, stage: str, advice: str = "") -> Layout:
    """The layout of `config`'s family, or an error naming the family and `stage` (and `advice`, what to do)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in LAYOUTS:
        raise LlmforgeError(f"{stage} does not know the layout of '{model_type}' models; it handles "
                            f"{', '.join(sorted(LAYOUTS))}{advice}")
    return LAYOUTS[model_type]


def blocks(model: nn.Module, layout: Layout) -> list[nn.Module]:
    return list(model.get_submodule(layout.blocks))


def mlp_width(config: object, layout: Layout) -> int:
    """The MLP's intermediate size (GPT-2's n_inner None means 4 * n_embd)."""
    return getattr(config, layout.width, None) or 4 * config.hidden_size  # type: ignore[attr-defined]


def weight_oi(layer: Projection) -> torch.Tensor:
    """The weight as (out, in) whatever the module stores; a view."""
    return layer.weight.t() if isinstance(layer, Conv1D) else layer.weight


def fused_rows(keeps: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """Rows to keep of a projection whose rows are segments of `sizes`, keeping `keeps[i]` of segment i."""
    offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
    return torch.cat([keep + offset for keep, offset in zip(keeps, offsets)])


def keep_rows(layer: Projection, keep: torch.Tensor) -> None:
    """Keep the output features `keep` (with their biases)."""
    if isinstance(layer, Conv1D):  # weight (I, O)
        layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
        layer.nf = len(keep)
    else:  # weight (O, I)
        layer.weight = nn.Parameter(layer.weight.data[keep].clone())
        layer.out_features = len(keep)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[keep].clone())


def keep_cols(layer: Projection, keep: torch.Tensor) -> None:
    """Keep the input features `keep`."""
    if isinstance(layer, Conv1D):
        layer.weight = nn.Parameter(layer.weight.data[keep].clone())
        layer.nx = len(keep)
    else:
        layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
        layer.in_features = len(keep)


def keep_channels(mlp: nn.Module, keep: torch.Tensor, layout: Layout = LLAMA) -> None:
    """Shrink an MLP (input projections (n * I, H), output (H, I)) to the intermediate channels in `keep`."""
    width = weight_oi(mlp.get_submodule(layout.mlp_out)).shape[1]  # I
    for name, n in layout.mlp_in:
        keep_rows(mlp.get_submodule(name), fused_rows([keep] * n, [width] * n))
    keep_cols(mlp.get_submodule(layout.mlp_out), keep)


def mlp_importance(mlp: nn.Module, activation: torch.Tensor | None, layout: Layout = LLAMA) -> torch.Tensor:
    """(I,) importance of each intermediate channel; `activation` is mean |input of the output projection| (I,)."""
    down = weight_oi(mlp.get_submodule(layout.mlp_out))  # (H, I)
    score = down.norm(dim=0)  # (I,)
    if activation is not None:
        return activation * score
    for name, n in layout.mlp_in:
        rows = weight_oi(mlp.get_submodule(name)).norm(dim=1)  # (n * I,)
        score = score * rows.reshape(n, -1).prod(dim=0)  # (I,): gate and up of a fused projection alike
    return score


def head_importance(attn: nn.Module, n_heads: int, head_dim: int, activation: torch.Tensor | None,
                    layout: Layout = LLAMA) -> torch.Tensor:
    """(n_heads,) importance of each query head; `activation` is mean |input of o_proj| per head (n_heads,)."""
    o = weight_oi(attn.get_submodule(layout.attn_out))  # (H, n_heads * D)
    out_norm = o.reshape(o.shape[0], n_heads, head_dim).norm(dim=(0, 2))  # (n_heads,)
    if activation is not None:
        return activation * out_norm
    name = next(n for n, segments in layout.qkv if "q" in segments)
    q = weight_oi(attn.get_submodule(name))[: n_heads * head_dim]  # (n_heads * D, H): q rows come first
    return q.reshape(n_heads, head_dim, -1).norm(dim=(1, 2)) * out_norm
