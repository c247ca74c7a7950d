"""One variant's measurement in its own process: `python -m llmforge.bench.worker JOB_JSON` prints JSON."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch


def run(job: dict[str, Any]) -> dict[str, Any]:
    from llmforge.bench.measure import measure, stored_weights
    from llmforge.config import BenchOptions, ModelConfig
    from llmforge.models.loader import load_model

    opts = BenchOptions(**job["options"])
    start = time.perf_counter()
    model, tokenizer = load_model(ModelConfig(name_or_path=job["model"]), merge_adapter=True)
    load_seconds = time.perf_counter() - start
    weights, weight_bytes = stored_weights(model)
    result: dict[str, Any] = {
        "name": job["name"], "model": job["model"], "load_seconds": load_seconds,
        "parameters": weights, "weight_bytes": weight_bytes,
        "dtype": _dtype(model),
        **measure(model, len(tokenizer), opts),
    }
    if job.get("data"):
        from llmforge.eval.runner import load_split, score

        test = load_split(Path(job["data"]), "test")
        test = test.select(range(min(opts.quality_samples, len(test))))
        result["perplexity"] = score(model, test)["perplexity"]
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if torch.cuda.is_available():
        result["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    return result


def _dtype(model: Any) -> str:
    quantization = getattr(model.config, "quantization", None)  # llmforge int8 artifacts
    if quantization:
        return f"int{quantization['bits']} ({quantization['activations']} activations)"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
