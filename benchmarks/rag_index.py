"""The retrieval index's choice: recall@10 against exact search and single-query latency, on 100k chunk vectors.

    python benchmarks/rag_index.py [--n 100000] [--base 1500] [--queries 500]

Embedding 100k chunks with MiniLM on 2 CPU cores takes too long for a benchmark, so: `--base` real chunks (Python
stdlib module, function and class docstrings, chunked as `llmforge rag index` does, at 128 tokens) are embedded
with the bundled all-MiniLM-L6-v2, and the 100k vectors are random convex mixtures of three real embeddings plus
Gaussian noise, renormalized (vectors where real chunk embeddings lie, related ones near each other). Queries are
drawn the same way, apart from the data.

Ground truth: IndexFlatIP (exact). Compared: HNSW (the index `rag index` builds above `exact_below`) at several
efSearch, and IVF-Flat (nlist 1024, trained on the data) at several nprobe. Latency is one query per call, as a
server retrieves, over faiss's threads here; the encoder's own time for one query is reported beside it.
Writes benchmarks/results/rag_index.json and prints a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def stdlib_chunks(tokenizer, n: int) -> list[str]:
    from llmforge.rag.index import chunk_text

    texts: list[str] = []
    for mod in sorted(m.name for m in pkgutil.iter_modules() if m.name in sys.stdlib_module_names):
        if mod.startswith("_") or mod in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        try:
            module = importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - some stdlib modules do not import on this platform
            continue
        docs = [module.__doc__ or ""] + [getattr(getattr(module, a, None), "__doc__", None) or ""
                                         for a in sorted(getattr(module, "__all__", None) or dir(module))
                                         if not a.startswith("_")]
        for doc in dict.fromkeys(docs):  # the module's docstring, then its public names' (each once)
            texts += [doc[s:e] for s, e, _ in chunk_text(doc, tokenizer, 128, 24) if e - s > 80]
        if len(texts) >= n:
            break
    return texts[:n]


def synth(base: np.ndarray, n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Each vector: a random convex mixture (Dirichlet) of three real embeddings, plus noise, renormalized."""
    picks = rng.integers(0, len(base), (n, 3))
    w = rng.dirichlet(np.ones(3), n).astype(np.float32)  # (n, 3)
    x = np.einsum("nk,nkh->nh", w, base[picks]) + noise * rng.standard_normal((n, base.shape[1]), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # (n, H)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--base", type=int, default=1500)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--noise", type=float, default=0.03)
    args = ap.parse_args()
    import faiss

    from llmforge.rag.encoder import load_encoder

    enc = load_encoder()
    texts = stdlib_chunks(enc.tokenizer, args.base)
    t = time.perf_counter()
    base = enc.embed(texts, batch_size=64)  # (B, 384)
    embed_s = time.perf_counter() - t
    one = [time.perf_counter()]
    for text in texts[:50]:
        enc.embed([text[:200]])
        one.append(time.perf_counter())
    encode_ms = float(np.median(np.diff(one))) * 1e3
    rng = np.random.default_rng(0)
    data, queries = synth(base, args.n, rng, args.noise), synth(base, args.queries, rng, args.noise)
    k = 10

    rows = []
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(data)
    build = time.perf_counter() - t
    truth, times = timed_search(flat, queries, k)
    rows.append(row("flat (exact)", {}, truth, truth, times, build))

    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(data)
    build = time.perf_counter() - t
    for ef in (16, 32, 64, 128, 256):
        hnsw.hnsw.efSearch = ef
        found, times = timed_search(hnsw, queries, k)
        rows.append(row("hnsw", {"m": 32, "ef_construction": 80, "ef_search": ef}, found, truth, times, build))

    t = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], 1024, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data)
    ivf.add(data)
    build = time.perf_counter() - t
    for nprobe in (8, 32, 64):
        ivf.nprobe = nprobe
        found, times = timed_search(ivf, queries, k)
        rows.append(row("ivf-flat", {"nlist": 1024, "nprobe": nprobe}, found, truth, times, build))

    result = {
        "setup": {"vectors": args.n, "dim": int(base.shape[1]), "queries": args.queries, "k": k,
                  "real_base_chunks": len(texts), "noise": args.noise, "encoder": enc.name,
                  "embed_base_s": round(embed_s, 1), "encode_one_query_ms": round(encode_ms, 2),
                  "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "cpu": cpu_model(),
                  "vectors_note": "Dirichlet mixtures of three real MiniLM embeddings of stdlib docstring chunks + noise"},
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "rag_index.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.n} vectors x {base.shape[1]} dims, {args.queries} queries, recall@{k} vs exact; "
          f"encoding one query: {encode_ms:.1f} ms")
    print(f"{'index':<14}{'params':<34}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}{'build s':>9}")
    for r in rows:
        params = ", ".join(f"{key}={r[key]}" for key in ("m", "ef_search", "nlist", "nprobe") if key in r)
        print(f"{r['index']:<14}{params:<34}{r['recall_at_10']:>10.4f}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}"
              f"{r['build_s']:>9.1f}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
