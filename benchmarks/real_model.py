"""llmforge against what users run instead, on a real model (SmolLM2-135M-Instruct), as ratios from one run.

    python benchmarks/real_model.py                      # train, decode, serve; ~1 h on 2 loaded cores
    python benchmarks/real_model.py --only decode,serve  # some parts (the others keep their last results)
    python benchmarks/real_model.py --quick              # smoke run: few steps and requests, results in build/

Needs `llmforge pull smollm2-135m-instruct` and llama-cpp-python (`make llama-cpp`). Parts:
- train: the seed's LoRA recipe (Alpaca-style text padded to max_length, `DataCollatorForLanguageModeling`,
  Trainer, fp32; benchmarks/train_throughput.py's `seed_recipe`) against llmforge prepare + train with its defaults
  (`llmforge_recipe`): the same records (`make demo-real`'s generated code tasks), epochs (so steps), learning
  rate, batch, LoRA settings and max_length. Ratio of trainer.train() wall time; held-out response loss of both.
- decode: greedy decode tokens/s at batch 1 and 8 (128-token prompt, prefill excluded, `llmforge bench`'s
  `measure`, each artifact in a fresh process at its runtime's default threads), for PyTorch fp32 and bf16,
  llmforge's int8-dynamic (`llmforge compress`), and `llmforge export`'s ONNX fp32/int8 and GGUF q8_0/q4_0
  (llama.cpp), and `llmforge serve`'s own decode loop on the PyTorch model with its defaults (dtype auto: bf16 on
  a CPU with native bf16; the PyTorch rows above decode with transformers' `generate`, what users run by hand).
  llama.cpp's batch 8 runs through llmforge serve's llamacpp backend (8 sequences per
  `llama_decode`; the bench runtime decodes one sequence). Each is given as % of the memory-bandwidth roofline
  for its bytes: a decode step reads the weights once for the whole batch, so roofline tokens/s =
  batch x read bandwidth (`llmforge bench`'s `machine_read_bandwidth`) / weight bytes.
- serve: 16 concurrent OpenAI-chat clients (`llmforge.serve.loadtest`, temperature 0, 32 tokens each, eos
  ignored), then single requests, against `llmforge serve` (defaults), the seed-style `pipeline()` server of
  benchmarks/serve.py, `llmforge serve` of the q8_0 GGUF with `backend=llamacpp`, and llama.cpp's own
  `llama-server -np 16 -t <cores>` on that GGUF (built once by benchmarks/llama_server.py).
Writes benchmarks/results/real_model.json and .md (with the CPU and the load average around each part).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts, reused by import

import llama_server  # noqa: E402
import serve as seed_serve  # noqa: E402
import train_throughput  # noqa: E402
from real_model_report import markdown, ratios  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
LR, MAX_LENGTH = 1e-3, 384  # `make demo-real`'s LoRA learning rate and max_length
FULL = {"train_records": 160, "test_records": 48, "new_tokens": 32, "repeats": 3, "requests": 64, "single": 10}
QUICK = {"train_records": 16, "test_records": 8, "new_tokens": 16, "repeats": 1, "requests": 16, "single": 3}
EXPORTS = ["onnx", "onnx-int8", "onnx-q8", "gguf-q8_0", "gguf-q4_0"]
IMPLAUSIBLE = 3.0  # x the roofline: a rate above it means timing noise swamped the decode time (tiny --quick runs)
ARTIFACTS = [  # (row, artifact, dtype the PyTorch loader is asked for)
    ("PyTorch fp32", "model", "float32"), ("PyTorch bf16", "model", "bfloat16"),
    ("int8-dynamic (llmforge compress)", "int8", "auto"), ("ONNX fp32", "onnx", "auto"),
    ("ONNX int8", "onnx-int8", "auto"), ("ONNX q8 (int8 blocks of 32, MatMulNBits)", "onnx-q8", "auto"),
    ("GGUF q8_0 (llama.cpp)", "gguf-q8_0", "auto"),
    ("GGUF q4_0 (llama.cpp)", "gguf-q4_0", "auto"),
    ("llmforge serve engine, PyTorch (dtype auto)", "model", "serve"),
    ("PyTorch fp32, again last (drift of the machine's load)", "model", "float32"),
]
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx_vnni",
         "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu() -> dict[str, Any]:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    flags = llama_server.cpu_flags()
    return {"model_name": name, "cores": os.cpu_count(), "flags": [f for f in FLAGS if f in flags],
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def source() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (uncommitted changes under src/)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_src_files": git("status", "--short",
                                                                                          "src").splitlines()}


# ---- shared inputs: the data, llmforge's int8 variant and exports of the base model (cached under --work)

def code_tasks(work: Path, train: int, test: int) -> tuple[list[dict], list[dict], Path]:
    """`make demo-real`'s generated docstring -> function tasks: (train, test, jsonl of input/output/split)."""
    from llmforge.data.code_tasks import code_task_records

    records = code_task_records(max_train=train, max_validation=16, max_test=test)
    path = work / f"code_tasks-{train}-{test}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: r[k] for k in ("input", "output", "split")}) + "\n" for r in records))
    return [r for r in records if r["split"] == "train"], [r for r in records if r["split"] == "test"], path


def prepared(work: Path) -> Path:
    """The SmolLM2-tokenized code tasks (calibration and parity prompts for compress and export)."""
    from llmforge.config import ModelConfig
    from llmforge.data.config import DataConfig, SplitConfig
    from llmforge.prepare.config import PrepareConfig
    from llmforge.prepare.runner import prepare

    _, _, path = code_tasks(work, FULL["train_records"], FULL["test_records"])
    return prepare(PrepareConfig(model=ModelConfig(name_or_path=MODEL), output_dir=work / "prepared",
                                 data=DataConfig(path=[str(path)], max_length=MAX_LENGTH,
                                                 split=SplitConfig(column="split")))).output_dir


def artifacts(work: Path) -> dict[str, str]:
    """artifact -> reference: the base model, its int8-dynamic variant, its ONNX and GGUF exports (made once)."""
    from llmforge.config import ModelConfig
    from llmforge.models.reference import export_formats, resolve_model

    refs = {"model": str(resolve_model(MODEL).path)}
    int8, export = work / "int8", work / "export"
    if not (int8 / "manifest.json").is_file() or not (export / "manifest.json").is_file():
        data = prepared(work)
    if not (int8 / "manifest.json").is_file():
        from llmforge.compress.config import CompressConfig, CompressOptions
        from llmforge.compress.runner import compress

        print("== llmforge compress int8-dynamic", flush=True)
        compress(CompressConfig(model=ModelConfig(name_or_path=MODEL), data=data, output_dir=int8,
                                compress=CompressOptions(method="quantize", quantize={"scheme": "int8-dynamic"},
                                                         quality_samples=16, generate_samples=0)))
    refs["int8"] = str(int8 / json.loads((int8 / "manifest.json").read_text())["model_dir"])
    if not (export / "manifest.json").is_file():
        from llmforge.export.config import ExportConfig, ExportOptions
        from llmforge.export.runner import export as run_export

        print(f"== llmforge export {', '.join(EXPORTS)}", flush=True)
        run_export(ExportConfig(model=ModelConfig(name_or_path=MODEL), data=data, output_dir=export,
                                export=ExportOptions(formats=EXPORTS)))
    refs.update({fmt: str(path) for fmt, path in export_formats(export).items()})
    for fmt in [f for f in EXPORTS if f not in refs]:  # a format added after `export` was made: its own run
        extra = work / f"export-{fmt}"
        if not (extra / "manifest.json").is_file():
            from llmforge.export.config import ExportConfig, ExportOptions
            from llmforge.export.runner import export as run_export

            print(f"== llmforge export {fmt}", flush=True)
            run_export(ExportConfig(model=ModelConfig(name_or_path=MODEL), data=prepared(work), output_dir=extra,
                                    export=ExportOptions(formats=[fmt])))
        refs.update({f: str(path) for f, path in export_formats(extra).items()})
    return refs


def gates(work: Path) -> dict[str, dict[str, Any]]:
    """artifact -> its quality against the fp32 model, as llmforge measured it (export parity, compress gate)."""
    out = {}
    formats = {}
    for run in [work / "export", *sorted(work.glob("export-*"))]:
        formats.update(json.loads((run / "metrics.json").read_text())["formats"])
    for fmt, m in formats.items():
        out[fmt] = {"passed": m.get("passed"), "perplexity_change": m.get("perplexity_change"),
                    "top1_agreement": m.get("top1_agreement")}
    m = json.loads((work / "int8" / "metrics.json").read_text())
    out["int8"] = {"passed": m.get("passed"), "perplexity_change": m.get("perplexity_change"),
                   "top1_agreement": m.get("top1_agreement")}
    return out


# ---- parts

def train_part(work: Path, sizes: dict[str, int]) -> dict[str, Any]:
    shutil.rmtree(work / "train", ignore_errors=True)  # both recipes start from nothing, every time
    train, test, data = code_tasks(work / "train", sizes["train_records"], sizes["test_records"])
    print(f"== train: llmforge ({len(train)} records)", flush=True)
    ours = train_throughput.llmforge_recipe(data, len(test), MAX_LENGTH, work / "train", base=MODEL, lr=LR)
    print(f"== train: seed recipe ({len(train)} records)", flush=True)
    seed = train_throughput.seed_recipe(train, test, MAX_LENGTH, work / "train", base=MODEL, lr=LR)
    metrics = json.loads((work / "train" / "llmforge" / "metrics.json").read_text())
    ours["choices"] = {k: v for k, v in metrics.items()  # what llmforge's defaults resolved to, where recorded
                       if k.startswith(("precision", "gradient_checkpointing", "threads", "batching", "loss"))}
    return {"records": len(train), "test_records": len(test), "max_length": MAX_LENGTH, "learning_rate": LR,
            "batch": train_throughput.BATCH, "epochs": train_throughput.EPOCHS, "lora_r": train_throughput.R,
            "seed": seed, "llmforge": ours, "speedup_wall": seed["seconds"] / ours["seconds"]}


def decode_worker(job: dict[str, Any]) -> dict[str, Any]:
    """One artifact's decode speed in this (fresh) process: `llmforge bench`'s measurement, on its runtime."""
    from llmforge.bench.config import BenchOptions
    from llmforge.bench.measure import measure
    from llmforge.bench.worker import artifact_facts
    from llmforge.config import ModelConfig
    from llmforge.models.reference import resolve_ref
    from llmforge.models.runtimes import load_runtime

    opts = BenchOptions(prompt_tokens=128, new_tokens=job["new_tokens"], batch_sizes=[1, 8],
                        repeats=job["repeats"], warmup=1)
    ref = resolve_ref(job["ref"])
    if job["dtype"] == "serve":  # the serving engine's own decode loop on its default backend and dtype
        return serve_loop_rates(ref, opts)
    context = opts.prompt_tokens + opts.new_tokens + 8
    runtime, tokenizer = load_runtime(ref, ModelConfig(dtype=job["dtype"]), context=context)
    result = {**artifact_facts(ref, runtime), **measure(runtime, len(tokenizer), opts)}
    if "8" not in result["decode_tokens_per_second"] and ref.runtime == "llamacpp":
        del runtime  # one llama.cpp model at a time
        result["decode_tokens_per_second"]["8"] = llamacpp_batch_rate(ref, 8, len(tokenizer), opts)
        result["b8_runtime"] = "llmforge serve's llamacpp backend"
    return result


def serve_loop_rates(ref: Any, opts: Any) -> dict[str, Any]:
    """`llmforge serve`'s decode on `ref` with its defaults (backend, dtype, threads): batch 1 and 8."""
    from llmforge.models.footprint import stored_weights
    from llmforge.serve.backends import load_backend
    from llmforge.serve.backends.base import LoadOptions

    backend = load_backend(ref.ref, LoadOptions(max_model_len=opts.prompt_tokens + opts.new_tokens + 8))
    rates = {str(b): backend_rate(backend, b, len(backend.tokenizer), opts) for b in (1, 8)}
    return {"runtime": f"llmforge serve's {backend.name} backend", "dtype": backend.info["dtype"],
            "weight_bytes": stored_weights(backend.model)[1], "decode_tokens_per_second": rates}


def llamacpp_batch_rate(ref: Any, rows: int, vocab: int, opts: Any) -> float:
    """Decode tokens/s of `rows` sequences per llama_decode (llmforge's serving backend), prefill excluded."""
    from llmforge.serve.backends import llamacpp
    from llmforge.serve.backends.base import LoadOptions

    backend = llamacpp.load(ref, LoadOptions(max_model_len=opts.prompt_tokens + opts.new_tokens + 8, max_rows=rows,
                                             threads=os.cpu_count()))
    return backend_rate(backend, rows, vocab, opts)


def backend_rate(backend: Any, rows: int, vocab: int, opts: Any) -> float:
    """Decode tokens/s of `rows` sequences through a serving backend's prefill/decode, prefill excluded."""
    import torch

    prompt = torch.randint(8, vocab, (opts.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()

    def timed(n: int) -> float:
        times = []
        for i in range(opts.warmup + opts.repeats):
            start = time.perf_counter()
            logits, state = backend.prefill([prompt] * rows)  # (B, V)
            for _ in range(n - 1):
                logits = backend.decode(state, logits.argmax(-1))
            times.append(time.perf_counter() - start)
            backend.select(state, [])  # frees the sequences
        return statistics.median(times[opts.warmup:])

    return rows * (opts.new_tokens - 1) / max(timed(opts.new_tokens) - timed(1), 1e-9)


def decode_part(work: Path, sizes: dict[str, int]) -> dict[str, Any]:
    from llmforge.bench.measure import machine_read_bandwidth

    refs = artifacts(work)
    quality = gates(work)
    bandwidth = machine_read_bandwidth()
    rows = []
    for name, artifact, dtype in ARTIFACTS:
        print(f"== decode: {name}", flush=True)
        job = {"ref": refs.get(artifact, ""), "dtype": dtype, "new_tokens": sizes["new_tokens"],
               "repeats": sizes["repeats"]}
        proc = subprocess.run([sys.executable, __file__, "--decode-worker", json.dumps(job)], capture_output=True,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            rows.append({"name": name, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]})
            continue
        r = json.loads(lines[-1])
        row = {"name": name, "ref": job["ref"], "weight_bytes": r["weight_bytes"], "dtype": r["dtype"],
               "b8_runtime": r.get("b8_runtime", r["runtime"]), "runtime": r["runtime"]}
        for b, rate in r["decode_tokens_per_second"].items():
            roofline = rate / int(b) * r["weight_bytes"] / bandwidth
            if roofline > IMPLAUSIBLE:
                row[f"noise_b{b}"] = rate
                continue
            row[f"b{b}"], row[f"roofline_b{b}"] = rate, roofline
        row.update(quality.get(artifact, {}))
        rows.append(row)
    base = next((r for r in rows if r["name"] == "PyTorch fp32" and "b1" in r), None)
    for r in rows:
        for b in ("b1", "b8"):
            if base and b in r:
                r[f"speedup_{b}"] = r[b] / base[b]
    return {"read_bandwidth_gbps": bandwidth / 1e9, "prompt_tokens": 128, "new_tokens": sizes["new_tokens"],
            "repeats": sizes["repeats"], "threads": "each runtime's default (torch, ONNX Runtime, llama.cpp: all "
            "cores)", "rows": rows}


def serve_part(work: Path, sizes: dict[str, int]) -> dict[str, Any]:
    from llmforge.models.reference import resolve_ref
    from llmforge.serve.backends.llamacpp import gguf_file
    from llmforge.serve.check import free_port

    gguf_run = artifacts(work)["gguf-q8_0"]
    gguf = gguf_file(Path(resolve_ref(gguf_run).path))
    logs = work / "serve-logs"
    logs.mkdir(parents=True, exist_ok=True)
    key = os.urandom(8).hex()
    cores = str(os.cpu_count())
    llmforge_cli = [sys.executable, "-m", "llmforge.cli", "serve"]
    servers: list[tuple[str, Any, str, str | None]] = [  # (name, command or a reason it cannot run, ready path, key)
        ("seed-style server (pipeline() per request)",
         lambda p: [sys.executable, seed_serve.__file__, "--seed-server", str(p), MODEL], "/v1/models", None),
        ("llmforge serve (defaults)", lambda p: [*llmforge_cli, MODEL, "--port", str(p)], "/ready", key),
        ("llmforge serve, GGUF q8_0, backend=llamacpp",
         lambda p: [*llmforge_cli, gguf_run, "--port", str(p), "--set", "backend=llamacpp"], "/ready", key),
    ]
    try:
        binary = llama_server.build()
        servers.append(("llama.cpp llama-server, GGUF q8_0", lambda p: [
            str(binary), "-m", str(gguf), "-np", "16", "-c", str(16 * 512), "-t", cores, "--host", "127.0.0.1",
            "--port", str(p)], "/health", None))
    except RuntimeError as exc:
        servers.append(("llama.cpp llama-server, GGUF q8_0", f"not built: {exc}", "", None))
    rows = []
    for name, cmd, ready, api_key in servers:
        print(f"== serve: {name}", flush=True)
        if isinstance(cmd, str):
            rows.append({"name": name, "error": cmd})
            continue
        port, log = free_port(), logs / (name.split(",")[0].split(" (")[0].replace(" ", "_") + f"-{len(rows)}.log")
        try:
            with seed_serve.started(cmd(port), port, ready, api_key, log=log) as url:
                row = {"name": name, "reply": _reply(url, api_key), "info": _info(url, api_key),
                       **seed_serve.measure(url, False, api_key, requests=sizes["requests"], single=sizes["single"])}
        except (SystemExit, Exception) as exc:  # a server that will not start or dies: its row says why
            tail = log.read_text().strip().splitlines()[-3:] if log.is_file() else []
            row = {"name": name, "error": f"{exc} | log: {' / '.join(tail)}"}
        rows.append(row)
    return {"clients": seed_serve.CLIENTS, "requests": sizes["requests"], "single_requests": sizes["single"],
            "max_tokens": seed_serve.TOKENS, "gguf": str(gguf), "rows": rows}


def _reply(url: str, key: str | None) -> str:
    """One greedy answer, to show every server runs the same model sensibly."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"], "temperature": 0,
            "max_tokens": 16, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    return r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else f"HTTP {r.status_code}"


def _info(url: str, key: str | None) -> Any:
    import httpx

    r = httpx.get(url + "/model_info", headers={"Authorization": f"Bearer {key}"} if key else {})
    return r.json() if r.status_code == 200 and "json" in r.headers.get("content-type", "") else None


PARTS = {"train": train_part, "decode": decode_part, "serve": serve_part}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="train,decode,serve", help="comma-separated parts: train, decode, serve")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, tokens and requests; "
                        "results go to WORK/quick/ instead of benchmarks/results/")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-real")
    for key in FULL:  # each size can be cut (a loaded machine) or raised
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, dest=key,
                            help=f"default {FULL[key]}; --quick: {QUICK[key]}")
    parser.add_argument("--decode-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_worker:
        print(json.dumps(decode_worker(json.loads(args.decode_worker))))
        return
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in PARTS]:
        sys.exit(f"--only: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes, out = (dict(QUICK), args.work / "quick") if args.quick else (dict(FULL), ROOT / "benchmarks" / "results")
    sizes.update({k: getattr(args, k) for k in FULL if getattr(args, k)})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "real_model.json"
    result = json.loads(path.read_text()) if path.is_file() else {}  # parts not run keep their last results
    result.update(model=MODEL, cpu=cpu(), quick=args.quick, source=source())
    for part in parts:
        work = args.work / ("quick" if args.quick else "full") if part == "train" else args.work
        began, load = time.time(), os.getloadavg()
        measured = PARTS[part](work, sizes)
        measured.update(started=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(began)),
                        seconds=time.time() - began, load_average_start=load, load_average_end=os.getloadavg())
        result[part] = measured
        path.write_text(json.dumps(result, indent=1) + "\n")  # a later part that dies keeps this one
    (out / "real_model.md").write_text(markdown(result))
    print("\n" + ratios(result))
    print(f"\nwrote {path} and {out / 'real_model.md'}")


if __name__ == "__main__":
    main()
