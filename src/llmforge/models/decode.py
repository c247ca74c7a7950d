"""Batch-1 greedy decode speed of any runtime, measured the same way for each.

A runtime is a function `generate(prompt_ids, n)` producing n new tokens (eos ignored). Decode rate is
(n - 1) / (time for n tokens - time for 1 token): the prompt's prefill is not counted. Warm-up runs first,
then the median of `repeats`; every runtime is tried at each thread count and keeps its fastest.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

Generate = Callable[[list[int], int], Any]


def decode_rate(generate: Generate, prompt: list[int], new_tokens: int = 64, repeats: int = 5,
                warmup: int = 2) -> float:
    def timed(n: int) -> float:
        for _ in range(warmup):
            generate(prompt, n)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(prompt, n)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return (new_tokens - 1) / max(timed(new_tokens) - timed(1), 1e-9)


def pytorch_runtime(model_dir: Path, threads: int) -> Generate:
    """transformers' generate with its KV cache, fp32: the baseline everyone starts from."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def generate(prompt: list[int], n: int) -> None:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    return generate


def onnx_runtime(directory: Path, threads: int) -> Generate:
    from llmforge.models.ort import OrtCausalLM

    ort = OrtCausalLM.load(directory, threads=threads)
    return lambda prompt, n: ort.generate([prompt], n)  # no eos id: always n tokens


def gguf_runtime(path: Path, threads: int) -> Generate:
    """llama.cpp through llama-cpp-python (the `llamacpp` extra)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
    vocab = llm.n_vocab()

    def generate(prompt: list[int], n: int) -> None:
        llm.reset()
        llm.eval(prompt)
        for _ in range(n - 1):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,))
            llm.eval([int(logits.argmax())])

    return generate


def fastest(make: Callable[[Any, int], Generate], artifact: Any, prompt: list[int], new_tokens: int = 64,
            repeats: int = 5, threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """{tokens_per_second, threads} at the fastest thread count."""
    best = max((decode_rate(make(artifact, t), prompt, new_tokens, repeats), t) for t in threads)
    return {"tokens_per_second": best[0], "threads": best[1]}
