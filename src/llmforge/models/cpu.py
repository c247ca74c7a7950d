"""The choices llmforge derives from the machine: the precision 'auto' means, and how many threads to use.

One rule for every stage: training (`train.precision: auto`), model loading (`model.dtype: auto`) and the server
(`dtype: auto`, `threads`) ask it here, so they cannot drift apart. The facts come from `llmforge.machine`.

bf16 on a CPU is a matter of instructions, measured (benchmarks/NOTES.md):
- AMX-BF16 (Intel Xeon, Sapphire Rapids and later): a 2048^2 matmul ran 6.6x faster in bf16 than in fp32 on 2
  threads, and SmolLM2-135M LoRA trained 1.55x faster under bf16 autocast, at the same held-out loss.
- avx512_bf16 without AMX (AMD EPYC Zen 4/5): bf16 dot products in AVX-512 registers; on the EPYC measured here
  SmolLM2 decoded 2.1x (batch 1) and 2.2x (batch 8) faster in bf16 and LoRA trained 1.7x faster, held-out loss
  within 0.9% of fp32's after 20 steps with the LoRA sums kept in fp32 (`llmforge.train.methods`;
  benchmarks/results/precision.json), so bf16.
- neither (an AVX2-only EPYC): torch emulates bf16, and its matmuls ran ~60x slower than fp32: fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmforge.machine import Cpu, detect

if TYPE_CHECKING:
    import torch

Name = Literal["fp32", "bf16", "fp16"]
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Precision:
    name: Name
    reason: str  # why: recorded beside the choice in metrics and manifests, shown by `llmforge doctor`

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, TORCH_NAMES[self.name])

    def describe(self) -> dict[str, str]:
        return {"precision": self.name, "precision_reason": self.reason}


def cpu_bf16(cpu: Cpu) -> Precision:
    """bf16 where the CPU computes it natively (AMX-BF16 or avx512_bf16), fp32 where torch would emulate it."""
    if cpu.has("amx_bf16"):
        return Precision("bf16", "CPU has AMX-BF16: bf16 matmuls run on its tile units (measured 6.6x fp32's)")
    if cpu.has("avx512_bf16"):
        return Precision("bf16", "CPU has avx512_bf16 (no AMX): bf16 measured faster than fp32 on such a CPU "
                                 "(AMD EPYC, SmolLM2: decode 2.1-2.2x, LoRA training ~2x)")
    return Precision("fp32", "CPU has neither AMX-BF16 nor avx512_bf16: torch emulates bf16 there "
                             "(measured ~60x slower than fp32 on an AVX2-only EPYC)")


def auto_precision(device_type: str, cpu: Cpu | None = None, cuda_bf16: bool = False) -> Precision:
    """What 'auto' computes in on `device_type`: on CUDA bf16 where supported (`cuda_bf16`), else fp16; on a
    CPU, `cpu_bf16` of `cpu` (default: this machine's)."""
    if device_type == "cuda":
        if cuda_bf16:
            return Precision("bf16", "CUDA device supports bf16")
        return Precision("fp16", "CUDA device without bf16 support")
    if device_type != "cpu":
        return Precision("fp32", f"device '{device_type}': no measured reason to leave fp32")
    return cpu_bf16(cpu or detect())


def precision_for(requested: str, device: torch.device) -> Precision:
    """`requested` (auto, fp32, bf16, fp16, or a torch dtype name) on `device`, with the reason it was chosen."""
    if requested != "auto":
        names = {torch_name: name for name, torch_name in TORCH_NAMES.items()}
        return Precision(names.get(requested, requested), "asked for")  # type: ignore[arg-type]
    if device.type == "cuda":
        import torch

        return auto_precision("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    return auto_precision(device.type)


def cpu_threads(requested: int | None = None, processes: int = 1, cores: int | None = None) -> int:
    """CPU threads for one process: `requested`, else the usable cores shared among `processes` (torchrun's local
    world size). Every core, not all but one: on 2 cores SmolLM2 decoded 1.2-1.4x faster with 2 threads than with 1 at
    batch 1 and 8 (the HTTP event loop needs little CPU), and torch, ONNX Runtime and llama.cpp all take this number."""
    if requested:
        return requested
    return max(1, (cores or detect().cores) // max(1, processes))
