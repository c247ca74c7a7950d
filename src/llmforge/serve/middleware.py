"""Plain ASGI middleware: request ids, JSON access logs and response counts, API keys, a body size limit, the A/B
variant.

Plain ASGI rather than `BaseHTTPMiddleware`, so streaming responses and disconnect messages pass through
untouched (a client that goes away must still be seen by the route, which then cancels its generation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmforge.serve.http_errors import RETRY_AFTER_S, error_response

access_log = logging.getLogger("llmforge.serve.access")
log = logging.getLogger("llmforge.serve")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a caller's id is kept only if it is safe to log and echo
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "none"  # the handler label of a path no route matches (prometheus-fastapi-instrumentator's)


def _routes(app: Any) -> Iterable[Any]:
    routes = getattr(app, "routes", ())
    try:  # newer FastAPI keeps an included router as one nested entry; this yields the routes inside it
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return routes
    return iter_route_contexts(routes)


def route_template(scope: Scope) -> str:
    """The matched route as declared ("/v1/models"), never the raw path, so a scan of random paths adds no series."""
    route = scope.get("route")  # set by the router; absent when a middleware answered first (401, 413)
    if route is None:
        # PARTIAL: the path with another method, which the router answers with 405 under that route
        route = next((r for r in _routes(scope.get("app")) if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", None) or UNMATCHED


class RequestContext:
    """Outermost: give every request an id (the caller's X-Request-Id when sane), echo it, log one JSON line, and
    `count` each response (method, route template, status) as it starts, so streams and refusals count too."""

    def __init__(self, app: ASGIApp, count: Callable[[str, str, int], None] | None = None) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status, sent, start, started = 500, 0, time.perf_counter(), False

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message).append("x-request-id", rid)
                if self.count is not None:
                    method = scope["method"] if scope["method"] in METHODS else "other"
                    self.count(method, route_template(scope), status)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            app = scope.get("app")
            if not getattr(getattr(app, "state", None), "draining", False):
                raise
            # uvicorn cancels what is left at the end of its graceful shutdown. The engines abort earlier (see
            # runner.py), so this is a backstop: a 503 the client can retry, one log line, no traceback.
            log.warning("request %s was still running when the server shut down", rid)
            if not started:
                await error_response(503, "the server is shutting down", code="service_unavailable",
                                     headers={"Retry-After": str(RETRY_AFTER_S)})(scope, receive, send_with_id)
        except Exception:  # answered here, so even a crash carries its request id and an OpenAI-shaped body
            log.exception("unhandled error in request %s", rid)
            if not started:
                await error_response(500, "internal server error", code="internal_error")(scope, receive,
                                                                                        send_with_id)
        finally:
            access_log.info(json.dumps({
                "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                "event": "access", "request_id": rid, "method": scope["method"], "path": scope["path"],
                "status": status, "duration_ms": round(1e3 * (time.perf_counter() - start), 2),
                "bytes": sent, "client": (scope.get("client") or ("", 0))[0], "model": state.get("model"),
                **({"variant": state["variant"]} if state.get("variant") else {}),
            }))


class ApiKeyAuth:
    """Bearer keys, compared in constant time against every configured key, on all but the public paths."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], public_paths: Iterable[str],
                 public_prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.public = set(public_paths)
        self.public_prefixes = tuple(public_prefixes)  # static assets (the playground's), never data

    def _allowed(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        ok = False
        for key in self.keys:  # no early exit: the time taken does not say which key, or how much, matched
            ok |= hmac.compare_digest(presented, key)
        return ok and bool(presented)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.keys or path in self.public or path.startswith(self.public_prefixes):
            await self.app(scope, receive, send)
            return
        if not self._allowed(Headers(scope=scope).get("authorization", "")):
            response = error_response(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'.",
                                      code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413: by Content-Length up front, else while reading a chunked body."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(413, f"The request body is larger than {self.limit} bytes.",
                             code="request_too_large")(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            # The body once, then the real channel: the route still hears about a disconnect.
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ServedBy:
    """Innermost: say which A/B variant served a request (X-LLMforge-Variant, set before the first byte, so on
    streams too) and record each generation request once its response is over (`record`, the event log)."""

    def __init__(self, app: ASGIApp, record: Callable[[dict[str, Any], str, int, float], None]) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status, start = 500, time.perf_counter()

        async def send_with_variant(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if state.get("variant"):
                    MutableHeaders(scope=message).append("x-llmforge-variant", state["variant"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_variant)
        finally:
            if state.get("model"):  # a generation route found its model
                try:
                    self.record(state, scope["path"], status, time.perf_counter() - start)
                except Exception:  # the log is a record of the request, never a reason to fail it
                    log.exception("could not record request %s", state.get("request_id"))
