"""`llmforge compress`'s config: quantization and pruning options, one variant per `CompressOptions`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmforge.config import ModelConfig, QualityGate, Section, TrainOptions


class QuantizeOptions(Section):
    scheme: Literal[
        "int8-dynamic", "int8-weight-only", "int8-static", "fp16", "bf16", "nf4", "bnb-int8", "int4-weight-only"
    ] = Field(
        "int8-dynamic",
        description="int8-dynamic: int8 weights, activations quantized per token at run time (the fastest int8 on CPU); "
        "int8-weight-only: int8 weights, float activations; int8-static: weights and activations calibrated on "
        "training samples, for ONNX Runtime (QDQ); fp16/bf16: half-precision copies; nf4/bnb-int8 "
        "(bitsandbytes) and int4-weight-only (torchao): CUDA only.",
    )
    kernel: Literal["auto", "torch", "torchao"] = Field(
        "auto", description="Kernels for int8 in PyTorch: torch (torch.ao / int8pack), torchao (the 'torchao' "
        "extra); auto picks what benchmarks/compress.py measured faster on CPU (torch).",
    )
    smoothquant: float | None = Field(
        0.5, ge=0, le=1, description="int8-dynamic: SmoothQuant migration strength alpha, calibrated on training "
        "samples (needs data); null turns it off.",
    )
    activation_scales: Literal["per-token", "per-tensor"] = Field(
        "per-token", description="int8-dynamic: one activation scale per token (row), or one per call (fbgemm's "
        "dynamic Linear). Per-token keeps one token's outliers from crushing the others' precision.",
    )
    weight_only: list[str] | Literal["auto"] = Field(
        default_factory=lambda: ["lm_head"],
        description="int8-dynamic: layers that keep float activations (same int8 weights, same file size): module "
        "names, or auto (the layers with the largest measured int8 sensitivity, see weight_only_share).",
    )
    weight_only_share: float = Field(
        0.5, gt=0, le=1, description="weight_only=auto: keep the fewest layers at weight-only int8 that together "
        "account for this share of the summed single-layer KL (needs data).",
    )
    sensitivity: bool = Field(
        False, description="Measure every layer's int8 sensitivity (one layer quantized at a time, KL against the "
        "float model on calibration samples) and write the table into metrics.json (needs data; ~1 forward pass "
        "of the calibration samples per layer).",
    )
    sensitivity_samples: int = Field(8, ge=1, description="Calibration samples for the sensitivity table.")
    gate: QualityGate = Field(default_factory=lambda: QualityGate(),
                              description="Quality limits against the parent; a variant outside them is failed.")

RECOVERY_DEFAULTS: dict[str, Any] = {  # a short, gentle fine-tune: measured on the demo by benchmarks/compress.py
    "method": "full", "max_steps": 150, "learning_rate": 5e-5, "warmup_ratio": 0.05,
    "distill": {"alpha": 1.0, "temperature": 1.0},
}

class PruneOptions(Section):
    method: Literal["structured", "magnitude", "random", "gradual"] = Field(
        "structured",
        description="structured: remove MLP channels and attention heads (a smaller model); magnitude / random: "
        "zero the smallest / random weights (same size and speed: dense zeros); gradual: magnitude pruning over "
        "`steps` stages with fine-tuning in between.",
    )
    sparsity: float = Field(
        0.25, gt=0, lt=1, description="Share of the transformer blocks' linear weights to remove (or zero); "
        "embeddings and norms are kept.",
    )
    scope: Literal["global", "layer"] = Field(
        "global", description="Unstructured: rank weights across all layers (global) or within each layer.")
    importance: Literal["activation", "magnitude"] = Field(
        "activation", description="Structured: rank channels and heads by their activations on calibration "
        "samples times their output weights, or by weight norms alone.",
    )
    heads: bool = Field(
        False, description="Structured: also remove attention heads, where GQA groups allow it. Off by default: "
        "a head is a large, coarse unit (half the heads of the demo model's GQA groups), and benchmarks/compress.py "
        "measured it costing far more quality per removed weight than MLP channels.",
    )
    steps: int = Field(4, ge=1, description="Gradual: pruning stages (cubic schedule), each followed by fine-tuning.")
    recovery: Literal["none", "lora", "full", "distill"] = Field(
        "none", description="Fine-tune after pruning to recover quality: LoRA (merged), full, or distillation "
        "from the unpruned parent (measured best on the demo: it pulls the pruned model back towards its parent's "
        "distribution); uses `train` (its method is set by this).",
    )
    train: TrainOptions = Field(
        default_factory=lambda: TrainOptions(**RECOVERY_DEFAULTS),
        description="Training options for recovery and gradual fine-tuning: a short, gentle fine-tune (a high "
        "learning rate moves the model away from its parent: +6.7% perplexity at 5e-4 vs +1.3% at 5e-5 on the demo).",
    )


    @model_validator(mode="before")
    @classmethod
    def _train_over_defaults(cls, data: Any) -> Any:
        """A partial `train:` section changes only the keys it names; the rest keep the recovery defaults."""
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            given = data["train"]
            distill = {**RECOVERY_DEFAULTS["distill"], **(given.get("distill") or {})}
            data = {**data, "train": {**RECOVERY_DEFAULTS, **given, "distill": distill}}
        return data

class CompressOptions(Section):
    name: str | None = Field(None, description="Variant name (default: the scheme, or prune method and share).")
    method: Literal["quantize", "prune"] = Field("quantize", description="Quantize, or prune.")
    quantize: QuantizeOptions = Field(default_factory=QuantizeOptions)
    prune: PruneOptions = Field(default_factory=PruneOptions)
    calibration_samples: int = Field(
        64, ge=1, description="Training samples for calibration (activation ranks, static int8 ranges).")
    quality_samples: int = Field(200, ge=1, description="Held-out samples for perplexity, KL and top-1 agreement.")
    generate_samples: int = Field(16, ge=0, description="Held-out prompts answered by parent and variant (ROUGE).")
    max_new_tokens: int = Field(64, ge=1, description="Longest generated answer for the ROUGE comparison.")

    def variant_name(self) -> str:
        if self.name:
            return self.name
        if self.method == "quantize":
            return self.quantize.scheme
        return f"{self.prune.method}-{round(self.prune.sparsity * 100)}"

class CompressConfig(Section):
    """`llmforge compress`: a smaller or faster variant of a model, with its quality measured against it."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The parent model (adapters are merged).")
    data: Path | None = Field(
        None, description="Prepared dataset: calibration from its train split, quality on `split`.")
    split: Literal["train", "validation", "test"] = Field("test", description="Split the quality is measured on.")
    compress: CompressOptions = Field(default_factory=CompressOptions)
    output_dir: Path = Field(Path("runs/compress"))
