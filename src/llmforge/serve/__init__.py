"""Serving: an OpenAI-compatible server over a continuous-batching engine.

    from llmforge.serve import ServeSettings, serve, create_app, loadtest
    serve(ServeSettings(models={"demo": "demo"}, port=8000))

Layout: `engine` (scheduling, no HTTP), `backends/` (transformers, onnx, llama.cpp), `schemas` (OpenAI bodies),
`app` + `api` (FastAPI), `server` (uvicorn), `loadtest` (a client). Importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import Any

_API = {
    "ServeSettings": ("llmforge.serve.settings", "ServeSettings"),
    "create_app": ("llmforge.serve.app", "create_app"),
    "serve": ("llmforge.serve.runner", "serve"),
    "loadtest": ("llmforge.serve.loadtest", "loadtest"),
    "Engine": ("llmforge.serve.engine", "Engine"),
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'llmforge.serve' has no attribute '{name}'")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
