"""Fine-tuning methods as options of one recipe: which weights train, and how the base is loaded."""

from __future__ import annotations

from typing import Any

import torch

from llmforge.config import ModelConfig, TrainOptions
from llmforge.models.cpu import precision_for
from llmforge.models.loader import default_device, load_model, load_tokenizer
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
    if opts.weights != "qlora":
        return load_model(model_cfg)
    quant = cuda_quantization_config("nf4", "train.method=qlora")
    from peft import prepare_model_for_kbit_training

    model, tokenizer = load_model(model_cfg, quantization_config=quant)
    checkpointing = opts.gradient_checkpointing is not False  # auto: QLoRA is chosen to save memory
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing), tokenizer


def apply_method(model: Any, opts: TrainOptions) -> Any:
    """The model with what `opts.method` trains: all of it (full, distill) or LoRA/DoRA adapters, whose sums stay
    in fp32 when the run autocasts to a 16-bit precision (`adapter_sums_in_fp32`)."""
    if opts.weights in ("full", "distill"):
        return model
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(opts))
    if precision_for(opts.precision, default_device()).name != "fp32":
        adapter_sums_in_fp32(model)
    return model


def lora_config(opts: TrainOptions) -> Any:
    """peft's LoraConfig for `train.lora` (DoRA where the weights trained are 'dora')."""
    from peft import LoraConfig

    return LoraConfig(
        r=opts.lora.r, lora_alpha=opts.lora.alpha, lora_dropout=opts.lora.dropout,
        target_modules=opts.lora.target_modules, task_type="CAUSAL_LM", use_dora=opts.weights == "dora",
    )


def adapter_sums_in_fp32(model: Any) -> int:
    """Under bf16/fp16 autocast, keep each LoRA layer's output `base(x) + B(A(x)) * scale` in fp32; returns how
    many layers it hooked.

    Autocast rounds the frozen layer's output to bf16's 8-bit mantissa before peft adds the adapter's update, which
    starts at zero and stays small next to it: the rounding swallows much of what the adapter changes. Measured on
    SmolLM2-135M (LoRA, 20 steps, benchmarks/NOTES.md): held-out loss +9.9% against fp32 with the rounding, within
    fp32's own seed-to-seed spread without it. The matmuls stay in bf16; only the sum (and the tensors the layer
    hands on) is kept in fp32, which autocast casts down again where the next matmul reads it.
    """
    from peft.tuners.lora import LoraLayer

    hooked = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), torch.nn.Linear):
            module.get_base_layer().register_forward_hook(_upcast)
            hooked += 1
    return hooked


def _upcast(_module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
    return output.float() if output.dtype in (torch.bfloat16, torch.float16) else None
