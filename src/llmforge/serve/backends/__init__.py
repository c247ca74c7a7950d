"""Serving backends behind one small interface (`base.Backend`), chosen from what the artifact says it is.

A registry of loaders, a plain dict. The kind of an artifact comes from its files' own descriptions (an
llmforge run's manifest, an ONNX export's `onnx_config.json`), never from a file name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmforge.errors import LlmforgeError, MissingExtraError
from llmforge.serve.backends.base import Backend, LoadOptions

Loader = Callable[[str, LoadOptions], Backend]


def _transformers(ref: str, opts: LoadOptions) -> Backend:
    from llmforge.serve.backends import hf

    return hf.load(ref, opts)


def _onnx(ref: str, opts: LoadOptions) -> Backend:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the onnx backend is not available: it needs ONNX Runtime, from the 'onnx' extra: "
            "pip install 'llmforge[onnx]'"
        ) from exc
    from llmforge.serve.backends import onnx

    return onnx.load(_onnx_dir(Path(ref)) or ref, opts)


def _llamacpp(ref: str, opts: LoadOptions) -> Backend:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"{ref} is a GGUF artifact: the llamacpp backend needs llama-cpp-python, from the 'llamacpp' extra: "
            "pip install 'llmforge[llamacpp]' (it compiles llama.cpp, ~13 min on 2 cores)"
        ) from exc
    from llmforge.serve.backends import llamacpp

    return llamacpp.load(ref, opts)


def _vllm(ref: str, opts: LoadOptions) -> Backend:
    raise MissingExtraError(
        "the vllm backend is not available: it needs the 'vllm' package and a CUDA GPU (pip install vllm); "
        "on this install use backend 'transformers', which also runs on a GPU"
    )


BACKENDS: dict[str, Loader] = {
    "transformers": _transformers,
    "onnx": _onnx,
    "llamacpp": _llamacpp,
    "vllm": _vllm,
}


def _onnx_dir(path: Path) -> Path | None:
    """The directory holding an llmforge ONNX export: `path` itself or the dir its manifest names."""
    candidates = [path]
    manifest = _manifest(path)
    for key in ("onnx_dir", "export_dir", "model_dir"):
        if manifest.get(key):
            candidates.append(path / manifest[key])
    return next((c for c in candidates if (c / "onnx_config.json").is_file()), None)


def _manifest(path: Path) -> dict[str, Any]:
    file = path / "manifest.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def detect_backend(ref: str) -> str:
    """Which backend serves `ref`: what its manifest or export config declares, else transformers."""
    path = Path(ref).expanduser()
    if not path.exists():
        return "transformers"  # 'demo' or a hub id
    manifest = _manifest(path)
    declared = manifest.get("backend") or manifest.get("format") or manifest.get("kind") or ""
    if _onnx_dir(path) is not None or "onnx" in str(declared):
        return "onnx"
    from llmforge.serve.backends.llamacpp import gguf_file

    if "gguf" in str(declared) or gguf_file(path) is not None:
        return "llamacpp"
    return "transformers"


def load_backend(ref: str, opts: LoadOptions | None = None, backend: str = "auto") -> Backend:
    name = detect_backend(ref) if backend == "auto" else backend
    if name not in BACKENDS:
        raise LlmforgeError(f"unknown backend '{name}'; allowed: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](ref, opts or LoadOptions())


__all__ = ["BACKENDS", "Backend", "LoadOptions", "detect_backend", "load_backend"]
