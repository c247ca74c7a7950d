"""A retrieval index as a run directory: `build_index(cfg)` chunks text files by encoder tokens, embeds the chunks and
writes them with a FAISS index; `load_index(dir)` reads it back and answers `search(query, k)`.

INDEX/
  chunks.jsonl    one chunk a line: id (= the FAISS id), source file, start/end character offsets, token count, text
  index.faiss     the vectors (inner product on unit vectors = cosine)
  manifest.json   kind "rag-index", and under "rag": encoder, dimension, chunking, index type and parameters, counts
  config.yaml, metrics.json   as every run directory (artifacts.RunDir writes it all, published atomically)

Which index: exact search (IndexFlatIP) below `exact_below` chunks, HNSW (IndexHNSWFlat) above. Exact search reads
every vector per query, so its latency grows linearly with the chunks: on 100k embedded chunks (stdlib source and
docs, 384 dims, 2 CPU cores) it took 7.4 ms a query, HNSW (M 32, efSearch 128) 0.2-0.3 ms at recall@10 0.977
(benchmarks/rag_index.py); below 20k chunks exact search stays under ~1.5 ms, beside the encoder's ~7 ms for the
query itself, and is exact. HNSW rather than IVF: IVF-Flat (nlist 1024) reached only 0.78 at nprobe 8 and 0.95 at
nprobe 64 (0.43 ms) on the same chunks, and it needs a k-means training pass over a representative sample whose
centroids go stale as documents change, and nlist/nprobe to tune per corpus size; HNSW takes additions one at a
time with no training, and its cost, about 2*M ids per vector of memory, is small beside the vectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmforge.artifacts import RunDir, StageResult, read_manifest
from llmforge.errors import ConfigError, LlmforgeError, require
from llmforge.models.encoder import BUNDLED, Encoder, load_encoder
from llmforge.progress import Hooks, begin

KIND = "rag-index"
CHUNKS = "chunks.jsonl"
FAISS_FILE = "index.faiss"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


class RagIndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    docs: list[Path] = Field(description="Text or markdown files, or directories of them (searched recursively).")
    output: Path = Field(description="Index directory to write.")
    encoder: str = Field(BUNDLED, description="Local encoder directory; default: the bundled all-MiniLM-L6-v2.")
    chunk_tokens: int = Field(200, ge=8, le=510, description="Encoder tokens per chunk.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens a chunk shares with the one before it.")
    exact_below: int = Field(20_000, ge=0, description="Exact search (IndexFlatIP) below this many chunks, HNSW above.")
    hnsw_m: int = Field(32, ge=4, description="HNSW neighbours per node (memory and recall rise with it).")
    ef_construction: int = Field(80, ge=8, description="HNSW candidate list while building.")
    ef_search: int = Field(128, ge=1, description="HNSW candidate list per query (recall and latency rise with it).")
    batch_size: int = Field(32, ge=1, description="Chunks embedded together.")

    @model_validator(mode="after")
    def _overlap(self) -> RagIndexConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens ({self.chunk_tokens})")
        return self


@dataclass(frozen=True)
class Hit:
    id: int
    source: str
    start: int
    end: int
    text: str
    score: float

    def ref(self) -> dict[str, Any]:
        """What a response names of a passage: no text (the client has the files, or asks)."""
        return {"id": self.id, "source": self.source, "start": self.start, "end": self.end,
                "score": round(self.score, 4)}


def _faiss() -> Any:
    return require("faiss", "rag")


def doc_files(paths: list[Path]) -> list[Path]:
    """The files to index: each file as given, each directory's text files (TEXT_SUFFIXES, no hidden ones) sorted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"rag index: '{p}' does not exist")
    if not files:
        raise ConfigError(f"rag index: no text files ({', '.join(TEXT_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files


def chunk_text(text: str, tokenizer: Any, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows of `size` tokens, each starting `size - overlap` tokens after the last: (start char, end char, tokens).
    Offsets come from the tokenizer's offset mapping, so a chunk is an exact slice of the file's text."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    out: list[tuple[int, int, int]] = []
    step = size - overlap
    for start in range(0, len(offsets), step):
        end = min(start + size, len(offsets))
        out.append((offsets[start][0], offsets[end - 1][1], end - start))
        if end == len(offsets):
            break
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LlmforgeError(f"rag index: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _build_faiss(vectors: np.ndarray, cfg: RagIndexConfig) -> tuple[Any, dict[str, Any]]:
    faiss = _faiss()
    dim = vectors.shape[1]
    if len(vectors) < cfg.exact_below:
        index, params = faiss.IndexFlatIP(dim), {"type": "flat"}
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        params = {"type": "hnsw", "m": cfg.hnsw_m, "ef_construction": cfg.ef_construction,
                  "ef_search": cfg.ef_search}
    index.add(vectors)  # ids are the row numbers, i.e. the chunk ids
    return index, params


def build_index(cfg: RagIndexConfig, encoder: Encoder | None = None, hooks: Hooks | None = None) -> StageResult:
    """Chunk, embed and index `cfg.docs` into the run directory `cfg.output`; `hooks` shows the embedding's
    progress (chunks done, rate, ETA)."""
    encoder, hooks = encoder or load_encoder(cfg.encoder), hooks or Hooks()
    chunks: list[dict[str, Any]] = []
    files = doc_files(cfg.docs)
    for path in files:
        text = _read(path)
        for start, end, tokens in chunk_text(text, encoder.tokenizer, cfg.chunk_tokens, cfg.chunk_overlap):
            chunks.append({"id": len(chunks), "source": str(path), "start": start, "end": end, "tokens": tokens,
                           "text": text[start:end]})
    if not chunks:
        raise ConfigError(f"rag index: the {len(files)} file(s) hold no text to index")
    with hooks.progress("embed") as progress:
        begin(progress, f"embedding {len(chunks)} chunks ({encoder.precision.name})", len(chunks))
        vectors = encoder.embed([c["text"] for c in chunks], cfg.batch_size, progress)  # (N, H)
    index, params = _build_faiss(vectors, cfg)
    metrics = {"files": len(files), "chunks": len(chunks), "tokens": sum(c["tokens"] for c in chunks)}
    with RunDir(cfg.output, kind=KIND, command="rag index", config=cfg) as run:
        with run.file(CHUNKS).open("w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        _faiss().write_index(index, str(run.file(FAISS_FILE)))
        run.extra["rag"] = {"encoder": encoder.name, "dim": int(vectors.shape[1]), "normalized": True,
                            **{f"encoder_{k}": v for k, v in encoder.precision.describe().items()},
                            "metric": "inner_product", "chunk_tokens": cfg.chunk_tokens,
                            "chunk_overlap": cfg.chunk_overlap, "index": params, **metrics}
        return StageResult(run.finish(metrics), metrics)


class RagIndex:
    """A finished index directory, loaded: its chunks, FAISS index and encoder."""

    def __init__(self, path: Path, encoder: Encoder | None = None) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if manifest.get("kind") != KIND:
            raise LlmforgeError(f"{self.path} is a '{manifest.get('kind')}' run directory, not a {KIND} "
                                "(build one with `llmforge rag index`)")
        self.info: dict[str, Any] = manifest["rag"]
        with (self.path / CHUNKS).open(encoding="utf-8") as f:
            self.chunks = [json.loads(line) for line in f]
        self.index = _faiss().read_index(str(self.path / FAISS_FILE))
        if self.info["index"]["type"] == "hnsw":
            self.index.hnsw.efSearch = self.info["index"]["ef_search"]
        self.encoder = encoder or load_encoder(self.info["encoder"])

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, query: str, k: int = 4) -> list[Hit]:
        """The `k` chunks nearest `query`, best first."""
        if not query.strip() or k < 1:
            return []
        scores, ids = self.index.search(self.encoder.embed([query]), min(k, len(self.chunks)))  # (1, k) each
        return [Hit(int(i), self.chunks[i]["source"], self.chunks[i]["start"], self.chunks[i]["end"],
                    self.chunks[i]["text"], float(score))
                for score, i in zip(scores[0], ids[0]) if i >= 0]


def load_index(path: Path, encoder: Encoder | None = None) -> RagIndex:
    return RagIndex(path, encoder)
