"""The playground's Runs page reads run directories as they are: no second copy of a number.

`list_runs(roots)` finds finished run directories (a `manifest.json`) under each root, a few levels deep, newest
first. `run_detail` returns one run's manifest, metrics.json and the other JSON reports at its top level (lint,
loss curve, ...), with the names of its plots and pages; `run_file` opens one of those for the browser, only inside
the run directory and only of the kinds a page shows. Runs are addressed by `ROOT_INDEX/relative/path`, so a
request can never name a directory outside the configured roots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.artifacts import MANIFEST, METRICS
from llmforge.errors import LlmforgeError

MAX_DEPTH = 3  # runs/<pipeline>/<stage> is the deepest layout llmforge writes
MAX_JSON_BYTES = 1 << 20  # a report bigger than this is listed, not inlined
SHOWN = {".png": "image/png", ".svg": "image/svg+xml", ".html": "text/html", ".md": "text/markdown",
         ".json": "application/json", ".jsonl": "application/x-ndjson", ".yaml": "text/yaml"}
# The numbers the Runs list shows beside each run (the compression table: size, perplexity, KL, top-1).
HEADLINE = ("variant", "size_bytes", "size_ratio", "perplexity", "perplexity_change", "kl_divergence",
            "top1_agreement", "passed", "train_loss", "eval_loss")


class RunNotFound(LlmforgeError):
    """No finished run directory, or no showable file, under that id."""


@dataclass(frozen=True)
class RunRoots:
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: list[Path]) -> RunRoots:
        return cls(tuple(Path(r).resolve() for r in roots))

    def resolve(self, run_id: str) -> Path:
        """The run directory `run_id` names ('0/demo/train'), or RunNotFound."""
        index, _, rel = run_id.partition("/")
        if not index.isdigit() or int(index) >= len(self.roots):
            raise RunNotFound(f"no run '{run_id}': ids start with a root's index (0..{len(self.roots) - 1})")
        root = self.roots[int(index)]
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not (path / MANIFEST).is_file():
            raise RunNotFound(f"no finished run directory '{rel}' under {root}")
        return path


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        return {"_skipped": f"{path.name} is {path.stat().st_size} bytes, over {MAX_JSON_BYTES}; open the file"}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"_error": f"{path.name} could not be read: {exc}"}


def _summary(run: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    return {"kind": manifest.get("kind"), "command": manifest.get("command"),
            "created_at": manifest.get("created_at"), "finished_at": manifest.get("finished_at"),
            "cpu": (manifest.get("machine") or {}).get("cpu")}


def _headline(run: Path) -> dict[str, Any]:
    metrics = _read_json(run / METRICS) if (run / METRICS).is_file() else {}
    return {k: metrics[k] for k in HEADLINE if isinstance(metrics, dict) and k in metrics}


def list_runs(roots: RunRoots) -> list[dict[str, Any]]:
    """Every finished run directory under the roots, newest first; unfinished (`.partial`) ones are flagged."""
    runs: list[dict[str, Any]] = []
    for i, root in enumerate(roots.roots):
        if not root.is_dir():
            continue
        frontier = [root]
        for _depth in range(MAX_DEPTH + 1):
            nxt = []
            for d in frontier:
                if (d / MANIFEST).is_file():
                    manifest = _read_json(d / MANIFEST)
                    rel = d.relative_to(root).as_posix()
                    runs.append({"id": f"{i}/{rel}" if rel != "." else f"{i}/", "path": str(d), "name": rel,
                                 "root": str(root), **_summary(d, manifest if isinstance(manifest, dict) else {}),
                                 "headline": _headline(d)})
                    continue  # a run's own folders are its content, not further runs
                try:
                    children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                for child in children:
                    if child.name.endswith(".partial"):
                        runs.append({"id": None, "path": str(child), "name": child.relative_to(root).as_posix(),
                                     "root": str(root), "kind": None, "partial": True})
                    else:
                        nxt.append(child)
            frontier = nxt
    return sorted(runs, key=lambda r: r.get("finished_at") or "", reverse=True)


def _reports(run: Path) -> list[Path]:
    """The showable files at the run's top level, where llmforge writes its reports and plots; subfolders hold
    weights, tokenizers, datasets and checkpoints (a tokenizer.json alone can be megabytes of vocabulary)."""
    return sorted(p for p in run.iterdir() if p.is_file() and p.suffix in SHOWN)


def run_detail(roots: RunRoots, run_id: str) -> dict[str, Any]:
    run = roots.resolve(run_id)
    manifest = _read_json(run / MANIFEST)
    files = _reports(run)
    reports = {p.relative_to(run).as_posix(): _read_json(p) for p in files
               if p.suffix == ".json" and p.name not in (MANIFEST, METRICS)}
    manifest_shown = {k: v for k, v in manifest.items() if k != "files"} if isinstance(manifest, dict) else manifest
    return {
        "id": run_id, "path": str(run), **_summary(run, manifest if isinstance(manifest, dict) else {}),
        "manifest": manifest_shown,
        "metrics": _read_json(run / METRICS) if (run / METRICS).is_file() else None,
        "reports": reports,
        "images": [p.relative_to(run).as_posix() for p in files if p.suffix in (".png", ".svg")],
        "pages": [p.relative_to(run).as_posix() for p in files if p.suffix in (".html", ".md")],
        "files": sorted((manifest.get("files") or {}) if isinstance(manifest, dict) else {}),
    }


def run_file(roots: RunRoots, run_id: str, name: str) -> tuple[Path, str]:
    """(path, media type) of a report file inside the run, or RunNotFound."""
    run = roots.resolve(run_id)
    path = (run / name).resolve()
    if not path.is_relative_to(run) or not path.is_file() or path.suffix not in SHOWN:
        raise RunNotFound(f"run '{run_id}' has no showable file '{name}' (shown: {', '.join(sorted(SHOWN))})")
    return path, SHOWN[path.suffix]
