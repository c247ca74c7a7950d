"""The one place that writes run directories.

A run directory explains itself: `config.yaml` (resolved config), `manifest.json` (kind, command, parents,
dataset fingerprint, package versions, the machine's CPU, git sha, sha256 of every file) and `metrics.json`.
Everything is written into `<dir>.partial/` and renamed into place only when complete, so a crash never
leaves a directory that looks finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llmforge import __version__
from llmforge.errors import LlmforgeError
from llmforge.machine import machine

MANIFEST = "manifest.json"
METRICS = "metrics.json"
CONFIG = "config.yaml"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary name in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"llmforge": __version__, "python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read_manifest(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        partial = run_dir.with_name(run_dir.name + ".partial")
        hint = f" ({partial} exists: that run did not finish)" if partial.exists() else ""
        if not run_dir.exists():
            raise LlmforgeError(f"{run_dir} does not exist; expected a finished llmforge run directory{hint}")
        raise LlmforgeError(f"{run_dir} is not a finished llmforge run directory: no {MANIFEST}{hint}")
    return json.loads(path.read_text(encoding="utf-8"))


def is_run_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def parent_ref(path: Path) -> dict[str, Any]:
    manifest = read_manifest(path)
    return {
        "path": str(Path(path).resolve()),
        "kind": manifest.get("kind"),
        "manifest_sha256": sha256_file(Path(path) / MANIFEST),
    }


def lineage(model: str | Path | None = None, data: Path | None = None) -> dict[str, Any]:
    """`parents` and `dataset_fingerprint` (RunDir's keywords) of a run made from `model` (a parent when it is a
    run directory) and the prepared dataset `data`."""
    parents = [Path(model)] if model is not None and is_run_dir(Path(model)) else []
    if data is not None:
        parents.append(Path(data))
    return {"parents": parents,
            "dataset_fingerprint": read_manifest(data).get("dataset_fingerprint") if data is not None else None}


@dataclass(frozen=True)
class StageResult:
    """What every stage returns: its published run directory and the numbers it wrote to metrics.json."""

    output_dir: Path
    metrics: dict[str, Any]
    cached: bool = False  # an identical finished run was already there and is returned as it is (prepare)


class RunDir:
    """A run directory under construction. Use as a context manager; call `finish()` to publish it."""

    def __init__(
        self,
        path: Path,
        *,
        kind: str,
        command: str,
        config: BaseModel | dict[str, Any],
        parents: list[Path] | None = None,
        dataset_fingerprint: str | None = None,
        keep_partial: bool = False,
        resumable: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".partial")
        self.kind = kind
        self.command = command
        self.config = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
        self.parents = [parent_ref(p) for p in parents or []]
        self.dataset_fingerprint = dataset_fingerprint
        self.started = dt.datetime.now(dt.timezone.utc)
        self.extra: dict[str, Any] = {}
        self.keep_partial = keep_partial
        self.resumable = resumable  # a subfolder (e.g. "checkpoints") that, once non-empty, survives a failure

    def __enter__(self) -> RunDir:
        if self.keep_partial:  # resume a crashed run, or join one a launcher prepared: keep what is there
            if not self.staging.is_dir():
                raise LlmforgeError(f"nothing to continue: {self.staging} does not exist")
            return self
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # A failed stage leaves nothing behind, unless it holds work a rerun can continue from (`resumable`:
        # training checkpoints), or it was joined rather than created here (`keep_partial`).
        if exc_type is None or self.keep_partial or self._resumable():
            return None
        shutil.rmtree(self.staging, ignore_errors=True)
        return None

    def _resumable(self) -> bool:
        folder = self.staging / self.resumable if self.resumable else None
        return folder is not None and folder.is_dir() and any(folder.iterdir())

    def file(self, relative: str) -> Path:
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finish(self, metrics: dict[str, Any]) -> Path:
        write_atomic(self.staging / CONFIG, yaml.safe_dump(self.config, sort_keys=False))
        write_json(self.staging / METRICS, metrics)
        files = {
            str(p.relative_to(self.staging)): sha256_file(p)
            for p in sorted(self.staging.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = {
            "kind": self.kind,
            "command": self.command,
            "created_at": self.started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "parents": self.parents,
            "dataset_fingerprint": self.dataset_fingerprint,
            "versions": package_versions(),
            "machine": machine(),  # numbers in metrics.json are this CPU's: which flags, how many cores
            "git_sha": git_sha(),
            **self.extra,
            "files": files,
        }
        write_json(self.staging / MANIFEST, manifest)
        self._publish()
        return self.path

    def _publish(self) -> None:
        if self.path.exists():
            old = self.path.with_name(self.path.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.path, old)
            os.replace(self.staging, self.path)
            shutil.rmtree(old)
        else:
            os.replace(self.staging, self.path)
