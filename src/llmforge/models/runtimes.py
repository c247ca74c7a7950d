"""Every artifact llmforge writes, run through its own runtime behind one small interface.

A runtime gives full-sequence logits (perplexity) and generates tokens (answers, decode speed):
  pytorch      transformers models: plain, adapter runs, compressed (int8, bf16/fp16, pruned)
  onnxruntime  ONNX exports (fp32, dynamic and static int8), through `OrtCausalLM`'s KV-cache loop
  llamacpp     GGUF exports, through llama-cpp-python (the `llamacpp` extra), one sequence at a time
TensorRT engines have no runtime loop here: they are refused with the reason.

Which runtime runs a reference is read from its manifest (`llmforge.models.reference.resolve_ref`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from llmforge.config import ModelConfig
from llmforge.errors import LlmforgeError, MissingExtraError
from llmforge.models.cpu import cpu_threads
from llmforge.models.reference import ModelRef


class Runtime(Protocol):
    name: str  # "pytorch" | "onnxruntime" | "llamacpp"
    max_batch: int | None  # rows generate() decodes together; None: any

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Right-padded input_ids (B, T) and attention_mask (B, T) -> fp32 logits (B, T, V) on the CPU or the
        model's device; positions under mask 0 hold anything."""
        ...

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, eos_token_id: int | None = None,
                 pad_token_id: int = 0, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0) -> list[list[int]]:
        """New tokens per prompt, ending with eos where it came; exactly max_new_tokens when eos_token_id is None."""
        ...


@dataclass
class TorchRuntime:
    model: Any
    name: str = "pytorch"
    max_batch: int | None = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                          use_cache=False).logits  # (B, T, V)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, eos_token_id: int | None = None,
                 pad_token_id: int = 0, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0) -> list[list[int]]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + p for p in prompts], device=device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)  # (B, T)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens,
                                  "pad_token_id": pad_token_id}
        if eos_token_id is None:
            kwargs["min_new_tokens"] = max_new_tokens
        else:
            kwargs["eos_token_id"] = eos_token_id
        if temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(temperature=temperature, top_p=top_p)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)  # (B, T + new)
        return out[:, width:].tolist()


@dataclass
class OrtRuntime:
    ort: Any  # llmforge.models.ort.OrtCausalLM
    name: str = "onnxruntime"
    max_batch: int | None = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits, _ = self.ort.forward(input_ids.cpu().numpy(), attention_mask.cpu().numpy())  # (B, T, V)
        return torch.from_numpy(logits).float()

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, eos_token_id: int | None = None,
                 pad_token_id: int = 0, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0) -> list[list[int]]:
        return self.ort.generate(prompts, max_new_tokens, temperature=temperature, top_p=top_p,
                                 eos_token_id=eos_token_id, seed=seed)


@dataclass
class LlamaCppRuntime:
    """One llama.cpp context with all logits kept (`logits_all`), so a forward pass yields every position."""

    llm: Any  # llama_cpp.Llama
    name: str = "llamacpp"
    max_batch: int | None = 1

    def _eval(self, ids: list[int]) -> None:
        if len(ids) > self.llm.n_ctx():
            raise LlmforgeError(f"llama.cpp context holds {self.llm.n_ctx()} tokens; a sequence has {len(ids)}")
        self.llm.reset()
        self.llm.eval(ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            n = sum(mask)  # right padding: the row's tokens come first
            self._eval(ids[:n])
            logits = np.zeros((len(ids), self.llm.n_vocab()), dtype=np.float32)  # (T, V); pads stay 0
            logits[:n] = self.llm.scores[:n]
            rows.append(torch.from_numpy(logits))
        return torch.stack(rows)  # (B, T, V)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, eos_token_id: int | None = None,
                 pad_token_id: int = 0, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0) -> list[list[int]]:
        return [self._one(p, max_new_tokens, eos_token_id, temperature, top_p, seed) for p in prompts]

    def _one(self, prompt: list[int], n: int, eos: int | None, temperature: float, top_p: float,
             seed: int) -> list[int]:
        if len(prompt) + n > self.llm.n_ctx():
            raise LlmforgeError(f"llama.cpp context holds {self.llm.n_ctx()} tokens; prompt and answer need "
                                f"{len(prompt) + n}")
        out: list[int] = []
        if temperature > 0:  # llama.cpp's own sampler chain: temperature, then nucleus (no top-k, no min-p)
            self.llm.set_seed(seed)
            for token in self.llm.generate(prompt, top_k=0, top_p=top_p, min_p=0.0, temp=temperature,
                                           repeat_penalty=1.0, reset=True):
                out.append(int(token))
                if len(out) == n or token == eos:
                    break
            return out
        self._eval(prompt)
        while True:  # greedy: argmax of the last position's logits
            out.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            if len(out) == n or out[-1] == eos:
                return out
            self.llm.eval([out[-1]])


def _tokenizer(source: str | None, ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    if not source:
        raise LlmforgeError(f"{ref.ref}: the manifest of {ref.run_dir} names no source model, whose tokenizer "
                            f"the {ref.format} artifact needs")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; eos is a safe stand-in
    return tokenizer


def _llamacpp(ref: ModelRef, context: int, threads: int | None) -> LlamaCppRuntime:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingExtraError(
            f"{ref.ref} is a GGUF export ({ref.format}); it runs on llama.cpp, through llama-cpp-python from the "
            "'llamacpp' extra: pip install 'llmforge[llamacpp]' (it compiles llama.cpp, ~15 min on 2 cores)"
        ) from exc
    # llama.cpp keeps its KV cache in f16 by default; an f32 file gets an f32 cache, as in export's parity check.
    kv = {"type_k": 0, "type_v": 0} if ref.format == "gguf-f32" else {}
    llm = llama_cpp.Llama(ref.path, n_ctx=context, n_batch=min(512, context), n_threads=cpu_threads(threads),
                          logits_all=True, verbose=False, **kv)
    return LlamaCppRuntime(llm)


def load_runtime(ref: ModelRef, model: ModelConfig | None = None, *, context: int = 2048,
                 threads: int | None = None, merge_adapter: bool = False) -> tuple[Runtime, Any]:
    """(runtime, HF tokenizer) for a resolved reference. `context`: the longest sequence llama.cpp must hold.

    `model` carries the PyTorch load options (dtype, revision...) for transformers kinds."""
    if ref.runtime == "pytorch":
        from llmforge.models.loader import load_model

        cfg = (model or ModelConfig()).model_copy(update={"name_or_path": ref.ref})
        torch_model, tokenizer = load_model(cfg, merge_adapter=merge_adapter, ref=ref)
        return TorchRuntime(torch_model), tokenizer
    if ref.runtime == "onnxruntime":
        from llmforge.models.ort import OrtCausalLM

        return OrtRuntime(OrtCausalLM.load(ref.path, threads=threads)), _tokenizer(ref.tokenizer, ref)
    if ref.runtime == "llamacpp":
        return _llamacpp(ref, context, threads), _tokenizer(ref.tokenizer, ref)
    if not torch.cuda.is_available():
        raise LlmforgeError(f"{ref.ref} is a TensorRT engine ({ref.format}): it runs on NVIDIA GPUs and this "
                            "machine has no CUDA device; measure the run's onnx or gguf formats on CPUs")
    raise LlmforgeError(f"{ref.ref} is a TensorRT engine ({ref.format}): llmforge has no TensorRT decode loop to "
                        "measure it with yet; measure the onnx format it was built from")


def as_runtime(model: Any) -> Runtime:
    """A torch model (what PyTorch workflows pass) wrapped as a runtime; a runtime as it is."""
    return TorchRuntime(model) if isinstance(model, torch.nn.Module) else model
