"""Fine-tuning methods as options of one recipe: which weights train, and how the base is loaded."""

from __future__ import annotations

from typing import Any

from llmforge.config import ModelConfig, TrainOptions
from llmforge.models.loader import load_model, load_tokenizer
from llmforge.models.quantization import cuda_quantization_config

ADAPTER_METHODS = ("lora", "dora", "qlora")


def load_teacher(model_cfg: ModelConfig, opts: TrainOptions) -> Any:
    if opts.method != "distill":
        return None
    teacher, _ = load_model(model_cfg.model_copy(update={"name_or_path": opts.distill.teacher}))
    return teacher


def load_base(model_cfg: ModelConfig, opts: TrainOptions, teacher: Any = None) -> tuple[Any, Any]:
    """Load the model to train; QLoRA loads it in 4-bit NF4 (bitsandbytes, CUDA only); a distillation student
    may be derived from the teacher."""
    d = opts.distill
    if opts.method == "distill" and (d.student_layers or d.student_intermediate_size):
        from llmforge.train.distill import derive_student

        tokenizer = load_tokenizer(model_cfg.model_copy(update={"name_or_path": d.teacher}))
        return derive_student(teacher, d.student_layers, d.student_intermediate_size).train(), tokenizer
    if opts.method != "qlora":
        return load_model(model_cfg)
    quant = cuda_quantization_config("nf4", "train.method=qlora")
    from peft import prepare_model_for_kbit_training

    model, tokenizer = load_model(model_cfg, quantization_config=quant)
    checkpointing = opts.gradient_checkpointing is not False  # auto: QLoRA is chosen to save memory
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing), tokenizer


def apply_method(model: Any, opts: TrainOptions) -> Any:
    if opts.method in ("full", "distill"):
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=opts.lora.r, lora_alpha=opts.lora.alpha, lora_dropout=opts.lora.dropout,
        target_modules=opts.lora.target_modules, task_type="CAUSAL_LM", use_dora=opts.method == "dora",
    )
    return get_peft_model(model, lora)
