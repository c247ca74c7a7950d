"""A tiny document set (a dozen chunks) and its index, shared by the rag and serve tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

DOCS = {
    "heapq.md": "# heapq\n\nThe heapq module implements a priority queue with a binary min-heap. heappush adds an item "
                "and heappop removes the smallest one. heapify turns a list into a heap in linear time.",
    "csv.md": "# csv\n\nThe csv module reads and writes comma-separated values files. csv.reader iterates over the "
              "rows of a file; csv.DictWriter writes dictionaries as rows with a header line.",
    "notes/bisect.txt": "The bisect module keeps a sorted list sorted: bisect_left finds the insertion point of a value "
                        "by binary search, and insort inserts it there.",
    "notes/zipfile.md": "The zipfile module reads and writes ZIP archives: ZipFile.extractall unpacks every member of "
                        "a compressed archive into a directory.",
}


def write_docs(root: Path) -> Path:
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / ".hidden.md").write_text("never indexed", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


@lru_cache(maxsize=1)
def encoder() -> Any:
    from llmforge.models.encoder import load_encoder

    return load_encoder()


def build(root: Path, **fields: Any) -> Path:
    from llmforge.rag import RagIndexConfig, build_index

    docs = write_docs(root / "docs")
    cfg = RagIndexConfig(docs=[docs], output=root / "index", chunk_tokens=24, chunk_overlap=6, **fields)
    return build_index(cfg, encoder()).output_dir
