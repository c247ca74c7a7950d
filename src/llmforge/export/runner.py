"""`llmforge export`: write the model in each requested format, then prove each behaves like the original.

Every format gets the same parity check against the PyTorch model it came from, recorded in metrics.json:
maximum |Δ logits| on fixed prompts, whether the greedy continuation is identical for N tokens, and whether the
format's tokenizer gives the same ids as the HF tokenizer on a corpus with unicode and special tokens.
fp32 formats must pass (|Δ logits| <= 1e-3, identical greedy tokens and tokenization); quantized ones must pass
their quality gate (export.gate: perplexity change and top-1 agreement against PyTorch), or they are failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.artifacts import RunDir, StageResult, lineage
from llmforge.config import QualityGate
from llmforge.errors import LlmforgeError
from llmforge.export import parity
from llmforge.export.config import ExportConfig
from llmforge.models.footprint import weight_file_bytes
from llmforge.models.loader import load_model
from llmforge.models.reference import ModelRef, resolve_model
from llmforge.progress import Hooks, Progress, begin

Stage = Callable[[str], None]
FP32_TOLERANCE = 1e-3
EXACT_FORMATS = ("onnx", "gguf-f32")  # formats held to the fp32 tolerance
MERGED = "merged"  # where an adapter given to export is merged, inside the export's run directory


@dataclass
class Reference:
    """The PyTorch model the exports are compared with, as the callables parity checks take."""

    model: Any
    tokenizer: Any
    prompts: list[list[int]]
    progress: Progress | None = None  # told of each greedy reference answer: one per parity prompt

    def logits(self, ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()  # (T, V)

    def generate(self, ids: list[int], n: int) -> list[int]:
        with torch.no_grad():
            out = self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                      dtype=torch.long), max_new_tokens=n, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id)
        if self.progress:
            self.progress(1)
        return out[0, len(ids):].tolist()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


def _prompts(cfg: ExportConfig, tokenizer: Any) -> list[list[int]]:
    """Held-out prompts (as the model was trained to see them) when there is data; else fixed texts."""
    n = cfg.export.parity_prompts
    if cfg.data is not None:
        from llmforge.data.splits import load_split
        from llmforge.metrics.generate import split_prompt

        test = load_split(cfg.data, "test")
        rows = test.select(range(min(n, len(test))))
        prompts = [split_prompt(list(r["input_ids"]), list(r["labels"]), tokenizer.eos_token_id)[0] for r in rows]
        if prompts:
            return [p[-128:] for p in prompts]
    texts = [t for t in parity.PARITY_TEXTS if t]
    return [tokenizer(t)["input_ids"][:128] for t in texts[:n]]


def _check(fmt: str, result: dict[str, Any], gate: QualityGate) -> dict[str, Any]:
    """passed: tokenization identical, and for fp32 formats logits within tolerance and greedy identical; for
    quantized formats, the quality gate (perplexity change and top-1 agreement against PyTorch); None when no
    runtime was there to measure (e.g. GGUF without llama-cpp-python)."""
    exact = fmt in EXACT_FORMATS
    result["tolerance"] = FP32_TOLERANCE if exact else None
    if "tokenization_identical" not in result:
        result["passed"] = None
        return result
    ok = result["tokenization_identical"]
    if exact:
        ok = ok and result["max_abs_logits_diff"] <= FP32_TOLERANCE and result["greedy_identical"]
    else:
        result.update(gate.apply(result))
        ok = ok and result["gate_passed"]
    result["passed"] = bool(ok)
    return result


def _onnx_parity(ref: Reference, directory: Path, n_tokens: int, threads: int | None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from llmforge.models.ort import OrtCausalLM

    ort = OrtCausalLM.load(directory, threads=threads)
    exported_tokenizer = AutoTokenizer.from_pretrained(str(directory))
    eos = ref.tokenizer.eos_token_id
    return {
        **parity.logits_parity(ref.logits, lambda ids: ort.logits([ids])[0], ref.prompts),
        **parity.greedy_parity(ref.generate, lambda ids, n: ort.generate([ids], n, eos_token_id=eos)[0],
                               ref.prompts, n_tokens),
        **parity.tokenization_parity(ref.encode, lambda t: list(exported_tokenizer(t)["input_ids"])),
    }


def _gguf_parity(ref: Reference, path: Path, fmt: str, n_tokens: int, threads: int | None,
                 chat_only: bool = False) -> dict[str, Any]:
    """Read back with gguf's reader; with llama-cpp-python installed, also logits, greedy and tokenization (of the
    parity texts as chat prompts where llama.cpp tokenizes only those as HF: `chat_only`, Mistral v0.3's)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    result: dict[str, Any] = {"tensors": len(reader.tensors), "metadata_keys": len(reader.fields)}
    try:
        import llama_cpp
    except ImportError:
        result["llama_cpp"] = "not installed (pip install 'llmforge[llamacpp]'): runtime parity not measured"
        return result
    # llama.cpp keeps its KV cache in f16 by default; f32 for the f32 file isolates the conversion itself.
    kv = {"type_k": 0, "type_v": 0} if fmt == "gguf-f32" else {}
    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=threads or 1, logits_all=True, verbose=False, **kv)
    try:
        def logits(ids: list[int]) -> np.ndarray:
            llm.reset()
            llm.eval(ids)
            return np.asarray(llm.scores[: len(ids)])  # (T, V)

        def generate(ids: list[int], n: int) -> list[int]:
            llm.reset()
            llm.eval(ids)
            out: list[int] = []
            while len(out) < n:
                out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                if out[-1] == ref.tokenizer.eos_token_id:
                    break
                llm.eval([out[-1]])
            return out

        result.update(parity.logits_parity(ref.logits, logits, ref.prompts))
        result.update(parity.greedy_parity(ref.generate, generate, ref.prompts, n_tokens))
        if chat_only:
            result.update(parity.tokenization_parity(
                lambda t: ref.tokenizer(t, add_special_tokens=False)["input_ids"],
                lambda t: llm.tokenize(t.encode(), add_bos=False, special=True), _as_chat(ref.tokenizer)))
            result["tokenization_texts"] = "chat prompts"
        else:
            result.update(parity.tokenization_parity(
                ref.encode, lambda t: llm.tokenize(t.encode(), add_bos=True, special=True)))
    finally:
        llm.close()
    return result


def _as_chat(tokenizer: Any) -> list[str]:
    """The parity texts as the user turn of a chat prompt, rendered by the tokenizer's template (it writes bos)."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True) for text in parity.PARITY_TEXTS]


def _calibration(cfg: ExportConfig) -> list[list[int]]:
    if cfg.data is None:
        raise LlmforgeError("onnx-int8-static needs `data` (a prepared dataset) for calibration samples")
    from llmforge.data.splits import load_split

    train = load_split(cfg.data, "train")
    return [list(r) for r in train.select(range(min(cfg.export.calibration_samples, len(train))))["input_ids"]]


def _export_one(fmt: str, ref: Reference, model_dir: Path, cfg: ExportConfig, run: RunDir) -> dict[str, Any]:
    from llmforge.export import onnx as onnx_export

    onnx_dir = run.staging / "onnx"
    needs_onnx = fmt.startswith(("onnx", "tensorrt"))
    if needs_onnx and not (onnx_dir / onnx_export.CONFIG_FILE).is_file():
        onnx_export.export_onnx(ref.model, ref.tokenizer, run.file("onnx"))
    n, threads = cfg.export.parity_tokens, cfg.export.threads
    if fmt == "onnx":
        return {"path": "onnx", "bytes": weight_file_bytes(onnx_dir), **_onnx_parity(ref, onnx_dir, n, threads)}
    if fmt in ("onnx-int8", "onnx-q8", "onnx-int8-static"):
        out = run.file(fmt)
        if fmt == "onnx-int8":
            facts = onnx_export.quantize_onnx_int8(onnx_dir, out)
        elif fmt == "onnx-q8":
            facts = onnx_export.quantize_onnx_q8(onnx_dir, out)
        else:
            facts = onnx_export.quantize_onnx_static(onnx_dir, out, _calibration(cfg))
        return {"path": fmt, "bytes": weight_file_bytes(out), "quantization": facts.get("quantization"),
                **_onnx_parity(ref, out, n, threads)}
    if fmt.startswith("gguf-"):
        from llmforge.export.gguf import export_gguf

        facts = export_gguf(model_dir, run.file(fmt), outtype=fmt.removeprefix("gguf-"))
        path = Path(facts["path"])
        return {"path": str(path.relative_to(run.staging)), "bytes": facts["bytes"],
                "tensor_types": facts["tensor_types"],
                **_gguf_parity(ref, path, fmt, n, threads, facts["chat_prompts_only"])}
    from llmforge.export.tensorrt import build_engine

    facts = build_engine(onnx_dir, run.file(fmt), precision=fmt.removeprefix("tensorrt-"))
    return {"path": fmt, "bytes": weight_file_bytes(run.staging / fmt), **facts}


def _speed(ref: Reference, model_dir: Path, formats: dict[str, Any], run: RunDir) -> float:
    """Decode tokens/s of PyTorch fp32 and of each CPU format (added to `formats`); returns PyTorch's rate."""
    from llmforge.models.decode import fastest, gguf_runtime, onnx_runtime, pytorch_runtime

    prompt = [t for p in ref.prompts for t in p][:128]  # held-out prompt tokens, as one 128-token prompt
    threads = torch.get_num_threads()  # the PyTorch runtime sets the process-wide count; restored below
    base = fastest(pytorch_runtime, model_dir, prompt, new_tokens=32, repeats=3)["tokens_per_second"]
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
    for fmt, m in formats.items():
        if fmt.startswith("onnx"):
            measured = fastest(onnx_runtime, run.staging / m["path"], prompt, new_tokens=32, repeats=3)
        elif fmt.startswith("gguf") and have_llama:
            measured = fastest(gguf_runtime, run.staging / m["path"], prompt, new_tokens=32, repeats=3)
        else:
            continue
        m["decode_tokens_per_second"] = measured["tokens_per_second"]
        m["speedup_vs_pytorch"] = measured["tokens_per_second"] / base
    torch.set_num_threads(threads)
    return base


def _model_dir(resolved: ModelRef) -> Path | None:
    """The full model's local directory; None for a LoRA adapter, which export merges on demand."""
    ref = resolved.ref
    if resolved.adapter is not None:
        return None
    path = Path(resolved.path)
    if not path.is_dir():
        raise LlmforgeError(f"export reads a local model directory; '{ref}' is not one (download it first)")
    return path


def _merge_on_demand(cfg: ExportConfig, run: RunDir, adapter: Path) -> tuple[Path, dict[str, Any]]:
    """Merge the adapter `cfg.model` names into the run's `merged/` (fp32, CPU): exports need the full weights,
    and the merged model stays beside them as the exports' source (GGUF serving takes its tokenizer)."""
    from llmforge.models.merge import merge_adapter

    facts = merge_adapter(cfg.model.model_copy(update={"dtype": "float32"}), run.file(MERGED), torch.device("cpu"))
    return run.staging / MERGED, {"merged_model": MERGED, "adapter": str(adapter.resolve()),
                                  "base_model": facts["base_model"]}


def _preflight(cfg: ExportConfig) -> None:
    """Refuse what cannot work before minutes of exporting."""
    formats = cfg.export.formats
    if not formats:
        raise LlmforgeError("export.formats is empty: name at least one format, e.g. onnx, onnx-int8, gguf-q8_0")
    if any(f.startswith("tensorrt") for f in formats):
        from llmforge.export.tensorrt import require_cuda

        require_cuda()
    if "onnx-int8-static" in formats and cfg.data is None:
        raise LlmforgeError("onnx-int8-static needs `data` (a prepared dataset) for calibration samples")


def export(cfg: ExportConfig, hooks: Hooks | None = None) -> StageResult:
    """Write each of `cfg.export.formats` and check it against the PyTorch model (parity, quality gate)."""
    hooks = hooks or Hooks()
    with hooks.progress("parity") as progress:
        return _export(cfg, hooks.stage, progress)


def _export(cfg: ExportConfig, stage: Stage, progress: Progress | None) -> StageResult:
    _preflight(cfg)
    started = time.perf_counter()
    resolved = resolve_model(cfg.model.name_or_path)  # a registry reference: its run dir, verified, is the parent
    model_dir = _model_dir(resolved)  # None: an adapter, merged below into the run dir
    with RunDir(cfg.output_dir, kind="export", command="export", config=cfg,
                **lineage(resolved.run_dir or cfg.model.name_or_path, cfg.data)) as run:
        merged: dict[str, Any] = {}
        if model_dir is None:
            stage("merge the LoRA adapter into its base model")
            model_dir, merged = _merge_on_demand(cfg, run, resolved.run_dir or Path(cfg.model.name_or_path))
        source = cfg.model.model_copy(update={"dtype": "float32", "name_or_path": str(model_dir)})
        model, tokenizer = load_model(source, torch.device("cpu"))
        ref = Reference(model, tokenizer, _prompts(cfg, tokenizer), progress)
        formats: dict[str, Any] = {}
        for fmt in cfg.export.formats:
            stage(f"export {fmt}")
            begin(progress, f"parity {fmt} (greedy answers)", len(ref.prompts))
            begin_time = time.perf_counter()
            formats[fmt] = _check(fmt, _export_one(fmt, ref, model_dir, cfg, run), cfg.export.gate)
            formats[fmt]["seconds"] = time.perf_counter() - begin_time
        metrics = {"source_bytes": sum(p.stat().st_size for p in model_dir.glob("*.safetensors")),
                   "parity_prompts": len(ref.prompts), "parity_tokens": cfg.export.parity_tokens,
                   "formats": formats}
        if cfg.export.speed:
            stage("decode speed against PyTorch fp32")
            metrics["pytorch_fp32_tokens_per_second"] = _speed(ref, model_dir, formats, run)
        metrics["seconds"] = time.perf_counter() - started
        final_source = cfg.output_dir.resolve() / MERGED if merged else model_dir.resolve()  # after publishing
        run.extra = {"formats": {fmt: v["path"] for fmt, v in formats.items()},
                     "source_model": str(final_source), **merged}
        run.finish(metrics)
    return StageResult(cfg.output_dir, metrics)
