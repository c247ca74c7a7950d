"""Serving backends behind one small interface (`base.Backend`), chosen from what the artifact says it is.

A registry of loaders, a plain dict. A reference is resolved once (`llmforge.models.reference.resolve_ref`: its
path, kind and manifest, read from the artifact's own descriptions, never from a file name) and that one
`ModelRef` is what the chosen loader receives.

| backend      | serves                                                     | extra     |
|--------------|------------------------------------------------------------|-----------|
| transformers | PyTorch models, adapters (merged on load), llmforge int8   | (core)    |
| onnx         | llmforge ONNX exports (fp32, int8), on ONNX Runtime (CPU)  | onnx      |
| llamacpp     | GGUF exports, on llama.cpp (llama-cpp-python)              | llamacpp  |
| vllm         | not built in: a clear error naming what to use instead     | -         |
"""

from __future__ import annotations

from collections.abc import Callable

from llmforge.errors import LlmforgeError, MissingExtraError
from llmforge.models.reference import ModelRef, resolve_ref
from llmforge.serve.backends.base import Backend, LoadOptions

Loader = Callable[[ModelRef, LoadOptions], Backend]
# The backend that serves each artifact kind (llmforge.models.reference.Kind).
BACKEND_OF_KIND = {"transformers": "transformers", "adapter": "transformers", "int8": "transformers",
                   "onnx": "onnx", "gguf": "llamacpp"}


def _transformers(ref: ModelRef, opts: LoadOptions) -> Backend:
    from llmforge.serve.backends import hf

    return hf.load(ref, opts)


def _onnx(ref: ModelRef, opts: LoadOptions) -> Backend:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the onnx backend is not available: it needs ONNX Runtime, from the 'onnx' extra: "
            "pip install 'llmforge[onnx]'"
        ) from exc
    from llmforge.serve.backends import onnx

    return onnx.load(ref.path, opts)


def _llamacpp(ref: ModelRef, opts: LoadOptions) -> Backend:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"{ref.ref} is a GGUF artifact: the llamacpp backend needs llama-cpp-python, from the 'llamacpp' extra: "
            "pip install 'llmforge[llamacpp]' (it compiles llama.cpp, ~13 min on 2 cores)"
        ) from exc
    from llmforge.serve.backends import llamacpp

    return llamacpp.load(ref, opts)


def _vllm(ref: ModelRef, opts: LoadOptions) -> Backend:
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


def detect_backend(ref: str | ModelRef) -> str:
    """Which backend serves `ref`: the one for the kind its manifest or export config declares."""
    resolved = ref if isinstance(ref, ModelRef) else resolve_ref(ref)
    if resolved.kind not in BACKEND_OF_KIND:
        raise LlmforgeError(f"{resolved.ref} is a {resolved.kind} artifact, which no llmforge backend serves; "
                            f"serve the model it was exported from, or one of its ONNX or GGUF exports")
    return BACKEND_OF_KIND[resolved.kind]


def load_backend(ref: str, opts: LoadOptions | None = None, backend: str = "auto") -> Backend:
    if backend != "auto" and backend not in BACKENDS:
        raise LlmforgeError(f"unknown backend '{backend}'; allowed: auto, {', '.join(BACKENDS)}")
    resolved = resolve_ref(ref)
    name = detect_backend(resolved) if backend == "auto" else backend
    return BACKENDS[name](resolved, opts or LoadOptions())


__all__ = ["BACKENDS", "Backend", "LoadOptions", "detect_backend", "load_backend"]
