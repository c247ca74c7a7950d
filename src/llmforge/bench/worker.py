"""One variant's measurement in its own process: `python -m llmforge.bench.worker JOB_JSON` prints JSON.

The variant runs on the runtime its manifest names (PyTorch, ONNX Runtime, llama.cpp). A failure a person can fix
(a missing extra, a bad reference) is printed as `{"error": ...}` with exit status 3, so the bench records it as
that variant's result and goes on with the others.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

USER_ERROR = 3  # exit status of a variant that failed with an LlmforgeError (its message is the JSON's "error")


def run(job: dict[str, Any]) -> dict[str, Any]:
    from llmforge.bench.config import BenchOptions
    from llmforge.bench.measure import measure
    from llmforge.models.reference import resolve_ref
    from llmforge.models.runtimes import load_runtime

    opts = BenchOptions(**job["options"])
    ref = resolve_ref(job["model"])
    test = None
    if job.get("data"):
        from llmforge.data.splits import load_split

        test = load_split(Path(job["data"]), "test")
        test = test.select(range(min(opts.quality_samples, len(test))))
    longest = max([len(ids) for ids in test["input_ids"]], default=0) if test is not None else 0
    context = max(opts.prompt_tokens + opts.new_tokens, longest) + 8
    start = time.perf_counter()
    runtime, tokenizer = load_runtime(ref, context=context, merge_adapter=True)
    load_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "name": job["name"], "model": job["model"], "format": ref.format or ref.kind, "load_seconds": load_seconds,
        **artifact_facts(ref, runtime),
        **measure(runtime, len(tokenizer), opts),
    }
    if test is not None:
        from llmforge.metrics.score import score

        result["perplexity"] = score(runtime, test)["perplexity"]
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if torch.cuda.is_available():
        result["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    return result


def artifact_facts(ref: Any, runtime: Any) -> dict[str, Any]:
    """{parameters, weight_bytes, dtype} of a loaded artifact: what one decode step reads."""
    from llmforge.models.footprint import stored_weights
    from llmforge.models.runtimes import OrtRuntime, TorchRuntime

    if isinstance(runtime, TorchRuntime):
        weights, size = stored_weights(runtime.model)
        return {"parameters": weights, "weight_bytes": size, "dtype": _dtype(runtime.model)}
    if isinstance(runtime, OrtRuntime):
        return {**_onnx_weights(runtime.ort), "dtype": ref.format}
    # llama-cpp-python 0.3 exposes the parameter count on its model wrapper only
    return {"parameters": int(runtime.llm._model.n_params()), "weight_bytes": Path(ref.path).stat().st_size,
            "dtype": ref.format}


def _onnx_weights(ort: Any) -> dict[str, int]:
    """Elements of the graph's initializers (int8 scales and zero points included) and the graph's bytes."""
    import onnx

    graph = onnx.load(str(ort.directory / ort.config["model_file"]), load_external_data=False).graph
    count = sum(int(np.prod(t.dims)) for t in graph.initializer)
    files = [ort.directory / ort.config["model_file"], ort.directory / ort.config.get("data_file", "")]
    return {"parameters": count, "weight_bytes": sum(f.stat().st_size for f in files if f.is_file())}


def _dtype(model: Any) -> str:
    quantization = getattr(model.config, "quantization", None)  # llmforge int8 artifacts
    if quantization:
        return f"int{quantization['bits']} ({quantization['activations']} activations)"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def main(argv: list[str]) -> int:
    from llmforge.errors import LlmforgeError

    try:
        result = run(json.loads(argv[1]))
    except LlmforgeError as exc:
        print(json.dumps({"error": str(exc)}))
        return USER_ERROR
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
