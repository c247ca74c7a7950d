"""The config core: the base of every config section, the sections more than one stage shares, and YAML loading.

Each stage keeps its own config beside it (`llmforge/<stage>/config.py`); the pipeline config that holds them all,
and the one function that turns it into each stage's config, live in `llmforge.stages`. Shared here: `ModelConfig`
(every stage), `TrainOptions` (train, and compress's recovery fine-tune) and `QualityGate` (compress and export).

Precedence: defaults < YAML < command-line flags < `--set key.path=value` overrides.
Every field's description is its documentation; unknown keys are errors, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmforge.errors import ConfigError


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
        "auto", description="Weights dtype; 'auto' is bfloat16 on a GPU that supports it, else float32 (training "
        "autocasts over fp32 weights: train.precision); the server also picks bfloat16 on a CPU with native bf16."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel; 'auto' lets transformers pick the best one the architecture supports "
        "(sdpa where it can, eager for e.g. Gemma 2, which has no sdpa path)."
    )


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


PREFERENCE_METHODS = ("dpo", "orpo", "kto")


class PreferenceOptions(Section):
    """Preference training (`train.method` dpo, orpo or kto) on prompt/chosen/rejected pairs, through TRL."""

    weights: Literal["lora", "dora", "qlora", "full"] = Field(
        "lora", description="Which weights train: LoRA/DoRA adapters (the reference is the model with them "
        "disabled, no second copy), adapters over a 4-bit base (qlora, CUDA), or all of them (full: the reference "
        "is a frozen copy).",
    )
    beta: float = Field(0.1, gt=0, description="DPO/KTO: how far from the reference the model may move (higher: "
                        "less); ORPO: the weight of the odds-ratio term (TRL's lambda).")


class TrainOptions(Section):
    method: Literal["full", "lora", "dora", "qlora", "distill", "dpo", "orpo", "kto"] = Field(
        "lora", description="full: every weight; lora/dora: adapters; qlora: adapters over a 4-bit base (CUDA); "
        "distill: train the model (or a student derived from the teacher) to match train.distill.teacher; "
        "dpo/orpo/kto: preference training on prompt/chosen/rejected data (train.preference).",
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
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute each layer's activations in the backward pass: a fraction of the memory for "
        "one more forward pass per step (~+50% time for LoRA, ~+33% for full). auto: on where the activations would "
        "exceed a quarter of the machine's memory, and for qlora.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU; on a CPU bf16 autocast over fp32 weights where it has "
        "AMX-BF16 or avx512_bf16 (measured faster; LoRA sums kept in fp32), fp32 where it has neither (bf16 is emulated "
        "there, far slower). `llmforge doctor` shows the choice; the run's metrics.json records it and why.",
    )
    logging_steps: int = Field(10, ge=1)
    seed: int = Field(0)
    shuffle: bool = Field(True, description="Shuffle the training data each epoch (False: file order).")
    merge: bool = Field(False, description="Also save the LoRA adapter merged into the base model.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: the cores this process may use, shared among "
        "--nproc processes).")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    distill: DistillOptions = Field(default_factory=DistillOptions)
    preference: PreferenceOptions = Field(default_factory=PreferenceOptions)

    @property
    def weights(self) -> str:
        """Which weights train: the method itself (full, lora, dora, qlora, distill), or for a preference method
        `train.preference.weights`."""
        return self.preference.weights if self.method in PREFERENCE_METHODS else self.method

    @model_validator(mode="after")
    def _distill_has_teacher(self) -> TrainOptions:
        if self.method == "distill" and not self.distill.teacher:
            raise ValueError("method 'distill' needs train.distill.teacher")
        return self


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
    return sorted(field.alias or name for name, field in model.model_fields.items())  # the YAML key ('from')


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


def dump(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load(schema: type[Section], path: Path | None = None, overrides: list[str] | None = None,
         flags: dict[str, Any] | None = None) -> Any:
    """A `schema` config: defaults < YAML at `path` < flags (dotted keys) < `--set` overrides."""
    data = read_yaml(path) if path else {}
    for key, value in (flags or {}).items():
        if value is not None:
            set_path(data, key.split("."), value)
    apply_overrides(data, overrides or [])
    return validate(schema, data, str(path) if path else "command line")
