"""The retrieval index's choice: recall@10 against exact search and single-query latency, on 100k embedded chunks.

    python benchmarks/rag_index.py [--n 100000] [--queries 500] [--chunk-tokens 128] [--overlap 24]

The chunks: text installed on this machine (the Python standard library's source, then site-packages' .py, .md,
.rst and .txt files, in sorted order), cut as `llmforge rag index` cuts them (`chunk_text`, by encoder tokens with
overlap; 128/24 here rather than the command's 200/40, which would take ~1.6x as long to embed), and embedded by
the bundled all-MiniLM-L6-v2 through `llmforge.models.encoder` in the precision it picks for this CPU. That takes
~20 min on 2 cores with bf16, so the vectors are cached under build/bench/ (keyed by the chunk texts' hash) and
a rerun only searches. Queries are short natural-language lines as users ask: the first sentence of public
stdlib docstrings, 500 of them, embedded the same way.

Ground truth: IndexFlatIP (exact). Compared: HNSW (the index `rag index` builds above `exact_below`) at several
efSearch, and IVF-Flat (nlist 1024, trained on the data) at several nprobe. Latency is one query per call, as a
server retrieves, over faiss's threads here; the encoder's own time for one query is reported beside it.
Writes benchmarks/results/rag_index.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import pkgutil
import platform
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench" / "rag_index"
SUFFIXES = {".py", ".md", ".rst", ".txt"}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def corpus_files() -> list[Path]:
    """The standard library's files, then site-packages', each tree sorted; files over 1 MB (generated tables) out."""
    stdlib, site = Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])
    files: list[Path] = []
    for root in (stdlib, site):
        files += sorted(f for f in root.rglob("*") if f.suffix in SUFFIXES and f.is_file() and "site-packages"
                        not in f.relative_to(root).parts[:1] and f.stat().st_size < 1_000_000)
    return files


def chunks(tokenizer, n: int, size: int, overlap: int) -> tuple[list[str], list[Path]]:
    """The first `n` chunks of the corpus (each a slice of a file, as `rag index` cuts it), and the files read."""
    from llmforge.rag.index import chunk_text

    texts: list[str] = []
    files = corpus_files()
    for read, path in enumerate(files, 1):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts += [text[s:e] for s, e, _ in chunk_text(text, tokenizer, size, overlap) if text[s:e].strip()]
        if len(texts) >= n:
            return texts[:n], files[:read]
    raise SystemExit(f"only {len(texts)} chunks in {len(files)} files; ask for fewer with --n")


def queries(n: int) -> list[str]:
    """First sentences of public stdlib docstrings (functions, classes, modules): short questions' length."""
    out: list[str] = []
    for mod in sorted(m.name for m in pkgutil.iter_modules() if m.name in sys.stdlib_module_names):
        if mod.startswith("_") or mod in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        try:
            module = importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - some stdlib modules do not import on this platform
            continue
        for name in sorted(getattr(module, "__all__", None) or dir(module)):
            doc = getattr(getattr(module, name, None), "__doc__", None) if not name.startswith("_") else None
            if not isinstance(doc, str):  # a descriptor's __doc__ slot, not text
                continue
            first = re.split(r"(?<=[.!?])\s", " ".join(doc.split()), maxsplit=1)[0]
            if 24 <= len(first) <= 200 and not first.startswith(name):  # prose, not a signature line
                out.append(first)
    out = list(dict.fromkeys(out))
    rng = np.random.default_rng(0)
    return [out[i] for i in sorted(rng.choice(len(out), min(n, len(out)), replace=False))]


def embedded(enc, texts: list[str]) -> tuple[np.ndarray, float | None]:
    """The texts' vectors, from the cache when these exact texts were embedded before; and the seconds it took now."""
    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{len(texts)}-{key}-{enc.precision.name}.npy"
    if path.exists():
        return np.load(path), None
    from llmforge.ui import progress_bar

    t = time.perf_counter()
    with progress_bar("embedding chunks", len(texts)) as progress:
        vectors = enc.embed(texts, batch_size=64, progress=progress)  # (N, 384)
    seconds = time.perf_counter() - t
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)  # a killed run leaves no cache that looks complete
    return vectors, seconds


def timed_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    ids, times = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None], k)  # (1, k): one query at a time, as a server retrieves
        times.append(1e3 * (time.perf_counter() - t))
        ids.append(i[0])
    return np.stack(ids), times


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def row(name: str, params: dict, found: np.ndarray, truth: np.ndarray, times: list[float], build_s: float) -> dict:
    return {"index": name, **params, "recall_at_10": round(recall(found, truth), 4),
            "p50_ms": round(float(np.percentile(times, 50)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "build_s": round(build_s, 1)}


def _cached_embed_s() -> float | None:
    """The embedding time an earlier run recorded, when this run read its vectors from the cache."""
    old = ROOT / "benchmarks" / "results" / "rag_index.json"
    return json.loads(old.read_text())["setup"].get("embed_s") if old.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--chunk-tokens", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=24)
    args = ap.parse_args()
    import faiss

    from llmforge.models.encoder import load_encoder

    enc = load_encoder()
    texts, files_read = chunks(enc.tokenizer, args.n, args.chunk_tokens, args.overlap)
    site = sum("site-packages" in f.parts for f in files_read)
    data, embed_s = embedded(enc, texts)
    asked = queries(args.queries)
    one = [time.perf_counter()]
    query_vectors = []
    for q in asked:
        query_vectors.append(enc.embed([q])[0])
        one.append(time.perf_counter())
    encode_ms = float(np.median(np.diff(one))) * 1e3
    queries_ = np.stack(query_vectors).astype(np.float32)  # (Q, 384)
    base = data
    k = 10

    rows = []
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(data)
    build = time.perf_counter() - t
    truth, times = timed_search(flat, queries_, k)
    rows.append(row("flat (exact)", {}, truth, truth, times, build))

    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(data)
    build = time.perf_counter() - t
    for ef in (16, 32, 64, 128, 256):
        hnsw.hnsw.efSearch = ef
        found, times = timed_search(hnsw, queries_, k)
        rows.append(row("hnsw", {"m": 32, "ef_construction": 80, "ef_search": ef}, found, truth, times, build))

    t = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], 1024, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data)
    ivf.add(data)
    build = time.perf_counter() - t
    for nprobe in (8, 32, 64):
        ivf.nprobe = nprobe
        found, times = timed_search(ivf, queries_, k)
        rows.append(row("ivf-flat", {"nlist": 1024, "nprobe": nprobe}, found, truth, times, build))

    result = {
        "setup": {"vectors": len(data), "dim": int(base.shape[1]), "queries": len(asked), "k": k,
                  "chunks": f"{args.chunk_tokens} encoder tokens, overlap {args.overlap}, from "
                            f"{len(files_read) - site:,} standard-library and {site:,} site-packages files "
                            "(.py .md .rst .txt)",
                  "mean_chunk_chars": round(float(np.mean([len(t) for t in texts])), 1),
                  "encoder": enc.name, "encoder_precision": enc.precision.name,
                  "embed_s": round(embed_s, 1) if embed_s is not None else _cached_embed_s(),
                  "encode_one_query_ms": round(encode_ms, 2),
                  "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "cpu": cpu_model(),
                  "queries_note": "first sentences of public stdlib docstrings"},
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "rag_index.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(data)} embedded chunks x {base.shape[1]} dims, {len(asked)} queries, recall@{k} vs exact; "
          f"encoding one query: {encode_ms:.1f} ms ({enc.precision.name})")
    print(f"{'index':<14}{'params':<34}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}{'build s':>9}")
    for r in rows:
        params = ", ".join(f"{key}={r[key]}" for key in ("m", "ef_search", "nlist", "nprobe") if key in r)
        print(f"{r['index']:<14}{params:<34}{r['recall_at_10']:>10.4f}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}"
              f"{r['build_s']:>9.1f}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
