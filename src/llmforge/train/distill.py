"""Knowledge distillation: loss = alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * CE.

Teacher logits are computed on the fly (no stored logits). The student is a given model, or derived from the
teacher's config (fewer layers, narrower MLP) and initialised from the teacher's own weights: evenly spaced
layers, and in each MLP the intermediate channels with the largest weight norms.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from llmforge.data.tokenize import IGNORE
from llmforge.errors import LlmforgeError
from llmforge.models.channels import keep_channels, mlp_importance


def distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """student/teacher logits (B, T, V), labels (B, T) aligned with inputs (shifted here, as the model does)."""
    s = student_logits[:, :-1].float()  # (B, T-1, V)
    t = teacher_logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    mask = target != IGNORE  # (B, T-1): only tokens the model is trained on
    ce = F.cross_entropy(s[mask], target[mask])
    kl = F.kl_div(F.log_softmax(s[mask] / temperature, -1), F.log_softmax(t[mask] / temperature, -1),
                  log_target=True, reduction="batchmean")  # KL(teacher || student), per scored token
    return alpha * temperature**2 * kl + (1 - alpha) * ce


class DistillTrainer(Trainer):  # type: ignore[misc]
    def __init__(self, *args: Any, teacher: Any, alpha: float, temperature: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        labels = inputs["labels"]
        features = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**features, use_cache=False)
        with torch.no_grad():
            teacher_logits = self.teacher(**features, use_cache=False).logits
        loss = distill_loss(outputs.logits, teacher_logits, labels, self.alpha, self.temperature)
        return (loss, outputs) if return_outputs else loss


def derive_student(teacher: Any, layers: int | None, intermediate_size: int | None) -> Any:
    """A smaller copy of a Llama-style teacher, initialised from its weights."""
    config = teacher.config
    n = config.num_hidden_layers
    layers = layers or n
    width = intermediate_size or config.intermediate_size
    if not 1 <= layers <= n or not 1 <= width <= config.intermediate_size:
        raise LlmforgeError(
            f"distill: student_layers must be in 1..{n} and student_intermediate_size in "
            f"1..{config.intermediate_size}, got {layers} and {width}"
        )
    student = copy.deepcopy(teacher)
    picked = [round(i * (n - 1) / max(layers - 1, 1)) for i in range(layers)] if layers > 1 else [0]
    student.model.layers = torch.nn.ModuleList([student.model.layers[i] for i in picked])
    for i, layer in enumerate(student.model.layers):
        layer.self_attn.layer_idx = i
        mlp = layer.mlp
        if width < config.intermediate_size:
            importance = mlp_importance(mlp, None)  # (I,)
            keep_channels(mlp, importance.topk(width).indices.sort().values)
    student.config = copy.deepcopy(config)
    student.config.num_hidden_layers = layers
    student.config.intermediate_size = width
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in picked]
    return student
