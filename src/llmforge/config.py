"""Typed configuration: one YAML schema for the whole pipeline, stage configs derived from it.

Precedence: defaults < YAML < command-line flags < `--set key.path=value` overrides.
Every field's description is its documentation; unknown keys are errors, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmforge.errors import ConfigError

DataFormat = Literal[
    "auto", "input_output", "alpaca", "dolly", "sharegpt", "messages", "text", "preference"
]


class Section(BaseModel):
    """Base for config sections: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(Section):
    name_or_path: str = Field(
        "demo",
        description="Hub id, local model directory, llmforge run directory, 'demo' (the embedded model), or a "
        "preset name (`llmforge models`; a pulled preset is its local copy).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Off by default: it executes remote code."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is float32 on CPU and bfloat16 on a GPU that supports it."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel."
    )


class SplitConfig(Section):
    validation: float = Field(0.05, ge=0, lt=1, description="Fraction of records for validation.")
    test: float = Field(0.05, ge=0, lt=1, description="Fraction of records held out for testing.")
    seed: int = Field(0, description="Seed of the deterministic split.")
    group_by: str | None = Field(
        None, description="Column whose equal values always land in the same split (e.g. a source id)."
    )

    column: str | None = Field(
        None, description="Column that names each record's split (train, validation or test); overrides the fractions."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be below 1 so that training data remains")
        if self.group_by and self.column:
            raise ValueError("set either group_by or column, not both")
        return self


class DataConfig(Section):
    path: list[str] = Field(
        default_factory=list,
        description="Input files, globs or saved `datasets` directories (.jsonl, .json, .csv, .parquet), split "
        "into train / validation / test by data.split, except for a split given its own files below.",
    )
    validation_path: list[str] = Field(
        default_factory=list,
        description="Files of the validation split, used as given (CLI --eval-data): data.split.validation is "
        "then not applied to data.path.",
    )
    test_path: list[str] = Field(
        default_factory=list,
        description="Files of the test split, used as given (CLI --test-data): data.split.test is then not "
        "applied to data.path.",
    )
    format: DataFormat = Field("auto", description="Record format; 'auto' detects it from the keys.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map llmforge field -> your column, e.g. {input: question}."
    )
    max_length: int = Field(1024, ge=8, description="Maximum tokens per sample.")
    overlong: Literal["drop", "truncate", "error", "chunk"] = Field(
        "drop",
        description="What to do with samples over max_length; 'chunk' splits plain text into windows.",
    )
    train_on_inputs: bool = Field(False, description="Also train on prompt tokens, not only the assistant's.")
    chat_template: str | None = Field(
        None, description="Named template ('chatml') to use when the tokenizer has none."
    )
    strict: bool = Field(True, description="Stop on bad records (listing them); else skip them to a rejects file.")
    dedupe: bool = Field(True, description="Drop exact duplicate records.")
    max_records: int | None = Field(None, ge=1, description="Read at most this many records per split.")
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_validator(mode="before")
    @classmethod
    def _path_as_list(cls, data: Any) -> Any:
        for key in ("path", "validation_path", "test_path"):
            if isinstance(data, dict) and isinstance(data.get(key), str):
                data = {**data, key: [data[key]]}
        return data

    @model_validator(mode="after")
    def _one_way_to_split(self) -> DataConfig:
        if self.split.column and (self.validation_path or self.test_path):
            raise ValueError("data.split.column names each record's split; it cannot be combined with "
                             "data.validation_path or data.test_path (files per split): use one or the other")
        return self

    def split_files(self) -> dict[str, list[str]]:
        """The splits given their own files (validation, test), each mapped to its inputs."""
        return {split: paths for split, paths in (("validation", self.validation_path), ("test", self.test_path))
                if paths}


class LoraOptions(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt: 'all-linear' or a list of module names."
    )


class DistillOptions(Section):
    teacher: str | None = Field(None, description="Teacher model (dir, run dir, hub id, 'demo').")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha weighs cross-entropy.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the KL term (scaled by T^2).")
    student_layers: int | None = Field(
        None, ge=1, description="Derive the student from the teacher with this many (evenly spaced) layers."
    )
    student_intermediate_size: int | None = Field(
        None, ge=1, description="Derive the student with this MLP width (the most important channels kept)."
    )


class TrainOptions(Section):
    method: Literal["full", "lora", "dora", "qlora", "distill"] = Field(
        "lora", description="full: every weight; lora/dora: adapters; qlora: adapters over a 4-bit base (CUDA); "
        "distill: train the model (or a student derived from the teacher) to match train.distill.teacher.",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1, description="Samples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_grad_norm: float = Field(1.0, gt=0)
    batching: Literal["auto", "packed", "grouped", "padded"] = Field(
        "auto",
        description="packed: samples concatenated, no padding, attention kept per sample (fastest with "
        "flash-attention's variable-length kernels on GPUs); grouped: batches of similar lengths, padded to the "
        "longest (fastest with SDPA, e.g. on CPU); padded: random batches padded to the longest; "
        "auto: packed with flash_attention_2, else grouped.",
    )
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (default: each epoch).")
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps, so `--resume` can continue after a crash (default: off)."
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without a lower eval loss; ends on the best checkpoint."
    )
    fsdp: str | None = Field(
        None, description="FSDP on GPUs, e.g. 'full_shard auto_wrap' (with --nproc N); see the README."
    )
    deepspeed: str | None = Field(
        None, description="DeepSpeed config file, e.g. configs/deepspeed/zero3.json (needs the 'deepspeed' extra)."
    )
    report_to: list[Literal["wandb", "mlflow", "tensorboard", "trackio"]] = Field(
        default_factory=list,
        description="Trackers to log to (offline-capable: wandb offline mode, mlflow sqlite, tensorboard, trackio). "
        "Metrics and a loss-curve PNG are always in the run directory.",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~30% slower.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU, fp32 on CPU, where bf16 is ~60x slower."
    )
    logging_steps: int = Field(10, ge=1)
    seed: int = Field(0)
    shuffle: bool = Field(True, description="Shuffle the training data each epoch (False: file order).")
    merge: bool = Field(False, description="Also save the LoRA adapter merged into the base model.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores).")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    distill: DistillOptions = Field(default_factory=DistillOptions)

    @model_validator(mode="after")
    def _distill_has_teacher(self) -> TrainOptions:
        if self.method == "distill" and not self.distill.teacher:
            raise ValueError("method 'distill' needs train.distill.teacher")
        return self


class EvalOptions(Section):
    split: Literal["train", "validation", "test"] = Field("test", description="Prepared split to score.")
    batch_size: int = Field(8, ge=1)
    max_samples: int | None = Field(None, ge=1, description="Score at most this many samples.")
    window: int | None = Field(
        None, ge=2, description="Score samples longer than this with sliding windows (default: whole sample)."
    )
    stride: int | None = Field(None, ge=1, description="Sliding-window stride (default: window // 2).")
    generate_samples: int = Field(
        0, ge=0, description="Also answer the first N prompts and score the answers (ROUGE, exact match); 0: off."
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest generated answer.")
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily.")
    syntax: Literal["none", "python"] = Field("none", description="Also check answers parse as this language.")
    harness_tasks: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks to run too (needs the 'lmeval' extra)."
    )
    harness_include: Path | None = Field(None, description="Folder of custom harness task YAMLs (offline tasks).")
    harness_limit: int | None = Field(None, ge=1, description="At most this many documents per harness task.")
    similarity_model: str | None = Field(
        None, description="Local encoder model dir: adds mean-pooled embedding cosine similarity of answers."
    )


class QualityGate(Section):
    """Limits a quantized model must meet against its parent on held-out text, or it is marked failed."""

    max_perplexity_change: float = Field(
        0.05, gt=0, description="Largest allowed relative perplexity increase over the parent (0.05 = +5%).")
    min_top1_agreement: float = Field(
        0.85, ge=0, le=1, description="Smallest allowed share of positions where the variant's most likely next "
        "token is the parent's.")

    def failures(self, metrics: dict[str, Any]) -> list[str]:
        """The limits `metrics` (perplexity_change, top1_agreement against the parent) break; empty if none."""
        broken = []
        if metrics.get("perplexity_change", 0.0) > self.max_perplexity_change:
            broken.append(f"perplexity {metrics['perplexity_change']:+.1%} > +{self.max_perplexity_change:.1%}")
        if metrics.get("top1_agreement", 1.0) < self.min_top1_agreement:
            broken.append(f"top-1 agreement {metrics['top1_agreement']:.1%} < {self.min_top1_agreement:.1%}")
        return broken

    def apply(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """gate_passed / gate_failures / the limits, to record beside the measured numbers."""
        broken = self.failures(metrics)
        return {"gate_passed": not broken, "gate_failures": broken, "gate": self.model_dump()}


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
        "extra); auto picks what bench/compress.py measured faster on CPU (torch).",
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


RECOVERY_DEFAULTS: dict[str, Any] = {  # a short, gentle fine-tune: measured on the demo by bench/compress.py
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
        "a head is a large, coarse unit (half the heads of the demo model's GQA groups), and bench/compress.py "
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


ExportFormat = Literal[
    "onnx", "onnx-int8", "onnx-int8-static", "gguf-f32", "gguf-f16", "gguf-bf16", "gguf-q8_0", "gguf-q5_1",
    "gguf-q5_0", "gguf-q4_1", "gguf-q4_0", "tensorrt-fp16", "tensorrt-int8",
]


class ExportOptions(Section):
    formats: list[ExportFormat] = Field(
        default_factory=list,
        description="Formats to write: onnx (fp32, KV cache), onnx-int8 (ONNX Runtime dynamic int8), "
        "onnx-int8-static (calibrated QDQ), gguf-<type> (llama.cpp / Ollama), tensorrt-fp16/int8 (CUDA).",
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


class PipelineConfig(Section):
    """The full form: `llmforge run config.yaml`. Stage commands read the sections they need."""

    name: str = Field("run", description="Run name, used in summaries.")
    output_dir: Path = Field(Path("runs/run"), description="Where every stage writes its run directory.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)
    eval: EvalOptions = Field(default_factory=EvalOptions)
    compress: list[CompressOptions] = Field(
        default_factory=list, description="Compressed variants made from the fine-tuned model, each measured."
    )
    export: ExportOptions = Field(
        default_factory=ExportOptions, description="Deployment formats of the fine-tuned model, parity-checked."
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.learning_rate=1e-4' -> (['train', 'learning_rate'], 1e-4); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key.path=value, e.g. train.learning_rate=1e-4")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{'.'.join(keys)}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        set_path(data, *parse_override(text))
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def explain(error: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """Turn pydantic's report into one short paragraph naming key, value and what is allowed."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, item["loc"]))
            lines.append(f"unknown key '{key}'; allowed here: {allowed}")
        else:
            value = item.get("input")
            lines.append(f"'{key}' = {value!r}: {item['msg']}")
    return ConfigError(f"invalid config ({source}): " + "; ".join(lines))


def validate(model: type[Section], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, model, source) from None


def load_config(
    path: Path | None = None, overrides: list[str] | None = None, flags: dict[str, Any] | None = None
) -> PipelineConfig:
    """Load a pipeline config: defaults < YAML < flags (dotted keys) < --set overrides."""
    data = read_yaml(path) if path else {}
    for key, value in (flags or {}).items():
        if value is not None:
            set_path(data, key.split("."), value)
    apply_overrides(data, overrides or [])
    return validate(PipelineConfig, data, str(path) if path else "command line")


def dump(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


class PrepareConfig(Section):
    """`llmforge prepare`: raw records -> tokenized, labelled, split `datasets` directories."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Model whose tokenizer is used.")
    data: DataConfig = Field(default_factory=DataConfig)
    output_dir: Path = Field(Path("runs/prepare"))


class TrainConfig(Section):
    """`llmforge train`: fine-tune (or pretrain) a model on a prepared dataset."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: Path = Field(..., description="A prepared dataset run directory (output of `llmforge prepare`).")
    train: TrainOptions = Field(default_factory=TrainOptions)
    output_dir: Path = Field(Path("runs/train"))


class EvalConfig(Section):
    """`llmforge eval`: score a model on a prepared split (token-weighted perplexity over trainable tokens)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: Path = Field(..., description="A prepared dataset run directory.")
    eval: EvalOptions = Field(default_factory=EvalOptions)
    output_dir: Path = Field(Path("runs/eval"))


def stage_dirs(cfg: PipelineConfig) -> dict[str, Path]:
    """Where `llmforge run` puts each stage; stage commands given a pipeline YAML use the same places."""
    out = cfg.output_dir
    return {
        "prepare": out / "prepare",
        "train": out / "train",
        "eval_base": out / "eval-base",
        "eval_finetuned": out / "eval-finetuned",
        "compress": out / "compress",
        "export": out / "export",
    }


class CompressConfig(Section):
    """`llmforge compress`: a smaller or faster variant of a model, with its quality measured against it."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The parent model (adapters are merged).")
    data: Path | None = Field(
        None, description="Prepared dataset: calibration from its train split, quality on `split`.")
    split: Literal["train", "validation", "test"] = Field("test", description="Split the quality is measured on.")
    compress: CompressOptions = Field(default_factory=CompressOptions)
    output_dir: Path = Field(Path("runs/compress"))


class ExportConfig(Section):
    """`llmforge export`: the model in the formats users deploy, each proven to behave like the original."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="A full model (merge adapters first).")
    data: Path | None = Field(None, description="Prepared dataset: parity prompts and static int8 calibration.")
    export: ExportOptions = Field(default_factory=lambda: ExportOptions(formats=["onnx", "onnx-int8", "gguf-f16"]))
    output_dir: Path = Field(Path("runs/export"))


class BenchOptions(Section):
    prompt_tokens: int = Field(128, ge=1, description="Prompt length of the measured request.")
    new_tokens: int = Field(64, ge=2, description="Tokens generated per measured request.")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], description="Batch sizes for decode speed.")
    repeats: int = Field(5, ge=1, description="Timed repetitions of each measurement (medians are reported).")
    warmup: int = Field(2, ge=0, description="Untimed runs first.")
    quality_samples: int = Field(200, ge=1, description="Test samples scored for perplexity, when data is given.")


class BenchConfig(Section):
    """`llmforge bench`: speed, memory, size (and quality) of each model variant, each in a fresh process."""

    models: list[str] = Field(..., min_length=1, description="Variants as NAME=MODEL or MODEL (dir, run dir, hub id).")
    data: Path | None = Field(None, description="Prepared dataset: adds held-out perplexity for each variant.")
    bench: BenchOptions = Field(default_factory=BenchOptions)
    output_dir: Path = Field(Path("runs/bench"))
