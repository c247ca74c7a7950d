"""The HTTP shell: `create_app(settings) -> FastAPI`. Generation lives in the engine, routes in `api`.

Operations routes: GET / and /health (liveness, never behind a key), /ready (every model loaded and warmed,
and not draining), /model_info, /metrics (Prometheus, vLLM names). Rollout routes (`rollout`): /v1/feedback,
/admin/reload. With `ui`: the playground at /ui (`llmforge.serve.ui`). Middleware, outermost first: request id +
JSON access log + `http_requests_total`, CORS (only when origins are configured), API keys, body size limit, the
A/B variant header + event log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psutil
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from llmforge import __version__
from llmforge.serve.ab import SHADOW
from llmforge.serve.api import SOURCES_HEADER, Generation, build_router
from llmforge.serve.events import EventLog
from llmforge.serve.http_errors import APIError, error_response, unavailable, validation_message
from llmforge.serve.metrics import ServeMetrics
from llmforge.serve.middleware import ApiKeyAuth, BodyLimit, RequestContext, ServedBy
from llmforge.serve.openapi import document
from llmforge.serve.pool import Loader, ModelPool
from llmforge.serve.rollout import Reloader, build_rollout_router
from llmforge.serve.settings import ServeSettings
from llmforge.serve.shadow import Shadow
from llmforge.serve.simple import build_simple_router

__all__ = ["ServeSettings", "create_app"]


def _install_errors(app: FastAPI) -> None:
    """Known failures as OpenAI bodies. Anything else is answered by RequestContext (a 500 with the request id)."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_message(exc.errors())  # 400 like OpenAI, not FastAPI's 422
        return error_response(400, message, param=param, code="invalid_request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def _health(app: FastAPI, pool: ModelPool) -> dict[str, Any]:
    proc = psutil.Process()
    vm = psutil.virtual_memory()
    body: dict[str, Any] = {
        "status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - app.state.started, 1),
        "model_loaded": pool.ready, "models": {m.name: m.status for m in pool.models.values()},
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory": {"rss_bytes": proc.memory_info().rss, "used_percent": vm.percent, "available_bytes": vm.available},
    }
    if torch.cuda.is_available():
        body["gpu"] = [_gpu(i) for i in range(torch.cuda.device_count())]
    return body


def _gpu(index: int) -> dict[str, Any]:
    gpu: dict[str, Any] = {"index": index, "name": torch.cuda.get_device_name(index),
                           "memory_allocated_bytes": torch.cuda.memory_allocated(index),
                           "memory_total_bytes": torch.cuda.get_device_properties(index).total_memory}
    try:
        gpu["utilization_percent"] = torch.cuda.utilization(index)
    except Exception:  # needs NVML (pynvml); memory figures are still worth reporting without it
        pass
    return gpu


def _install_ops(app: FastAPI, pool: ModelPool, metrics: ServeMetrics) -> None:
    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return _health(app, pool)

    @app.head("/", response_class=Response, responses={200: {"description": "Alive (no body)."}})
    @app.head("/health", response_class=Response, responses={200: {"description": "Alive (no body)."}})
    async def health_probe() -> Response:  # probes often send HEAD
        return Response(status_code=200)

    @app.get("/ready")
    async def ready() -> Response:
        if app.state.draining:
            raise unavailable("the server is shutting down", retry_after_s=30)
        if not pool.ready:
            waiting = {m.name: m.error or m.status for m in pool.models.values() if m.status != "ready"}
            raise unavailable(f"not ready: {waiting}", retry_after_s=5)
        return JSONResponse({"status": "ready", "models": pool.names()})

    @app.get("/model_info")
    async def model_info() -> dict[str, Any]:
        return {"models": [m.describe() for m in pool.models.values()]}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format (vLLM's metric names)."}})
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: ServeSettings, *, loader: Loader | None = None,
               on_load_error: Callable[[list[str]], None] | None = None) -> FastAPI:
    """The server for `settings`. Models load in the background once the app starts (see /ready).

    `loader` replaces how a backend is built (tests slow one down); `on_load_error` hears about models that
    failed to load (`serve` uses it to stop with a clear message instead of serving a broken model).
    """
    metrics = ServeMetrics(lambda: [(m.name, m.variant, m.engine) for m in pool.served()
                                    if m.engine is not None and m.variant != SHADOW])
    pool = ModelPool(settings, lambda m, stats: metrics.observe(m.name, stats, m.variant), loader)
    events = EventLog(settings.event_log)
    shadow = Shadow(pool, events, metrics.shadow, settings.shadow_queue, settings.max_concurrency,
                    settings.request_timeout_s)
    public = set(settings.public_paths) if settings.api_keys else None
    reloader = Reloader(pool, metrics, on_commit=lambda: document(app, pool.names(), public))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = time.monotonic()
        psutil.cpu_percent(interval=None)  # the first reading only starts the measurement
        loading = asyncio.create_task(_load(pool, on_load_error))
        shadow.start()
        try:
            yield
        finally:
            app.state.draining = True
            await shadow.stop()
            await asyncio.to_thread(pool.close)  # aborts what is left after uvicorn's graceful wait
            loading.cancel()
            events.close()

    app = FastAPI(title="llmforge", version=__version__, lifespan=lifespan)
    app.state.draining, app.state.started, app.state.pool, app.state.metrics = False, time.monotonic(), pool, metrics
    app.state.events, app.state.shadow, app.state.reloader = events, shadow, reloader
    _install_errors(app)
    _install_ops(app, pool, metrics)
    gen = Generation(pool, shadow, _retriever(settings))
    app.include_router(build_router(gen))
    app.include_router(build_simple_router(gen))
    app.include_router(build_rollout_router(pool, events, metrics, reloader, admin=bool(settings.api_keys)))
    public_paths, public_prefixes = list(settings.public_paths), []
    if settings.ui:
        from llmforge.serve.ui import PUBLIC_PATHS, PUBLIC_PREFIX, install_ui

        install_ui(app, settings)
        public_paths += PUBLIC_PATHS
        public_prefixes.append(PUBLIC_PREFIX)
    document(app, pool.names(), public)
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(ServedBy, record=events.request)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeyAuth, keys=settings.api_keys, public_paths=public_paths, public_prefixes=public_prefixes)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id", settings.session_header],
                           expose_headers=["X-Request-Id", "Retry-After", "X-LLMforge-Variant",
                                           SOURCES_HEADER])
    app.add_middleware(RequestContext, count=metrics.response)
    return app


def _retriever(settings: ServeSettings) -> Any:
    """The `--rag` index, loaded before the server starts: a bad index directory stops it with a clear message."""
    if settings.rag is None:
        return None
    from llmforge.rag import load_index

    return load_index(settings.rag)


async def _load(pool: ModelPool, on_load_error: Callable[[list[str]], None] | None) -> None:
    errors = await asyncio.to_thread(pool.load_all)
    if errors and on_load_error is not None:
        on_load_error(errors)
