"""Rollout routes: POST /v1/feedback (a score for a response, counted per variant) and POST /admin/reload
(load new or re-resolved models while the old ones serve, swap, drain the old). SIGHUP reloads the same way
(`runner`). Both routes are behind the API key; /admin/reload is refused outright on a server without keys,
since it loads whatever reference it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmforge.serve.ab import Rollout
from llmforge.serve.events import EVENTS, EventLog
from llmforge.serve.http_errors import APIError, unavailable, validation_message
from llmforge.serve.metrics import ServeMetrics
from llmforge.serve.pool import ModelPool
from llmforge.serve.settings import ServeSettings

log = logging.getLogger("llmforge.serve")
FEEDBACK_MAX_BYTES = 16 * 1024


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="The response's `id` (or its X-Request-Id header).")
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False,
                         description="0 worst, 1 best (thumbs down/up: 0/1; a 1-5 rating r: (r - 1) / 4).")
    comment: str | None = Field(None, max_length=2000)


class FeedbackRecorded(BaseModel):
    id: str
    model: str
    variant: str = Field(description="The A/B variant that served the response ('' for a model served alone).")
    recorded: bool = True


class ReloadRequest(BaseModel):
    """Empty: reload every served name, each reference resolved again. With `models` or `ab`: those names only,
    each entry replacing (or adding) that name's models, references or weights."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] | None = None
    ab: dict[str, Rollout] | None = None


def plan_reload(current: ServeSettings, change: ReloadRequest) -> tuple[ServeSettings, list[str]]:
    """The settings after a reload and the served names it loads again (ValueError when they do not validate)."""
    data = current.model_dump(mode="json")
    models, ab = change.models or {}, {k: v.model_dump() for k, v in (change.ab or {}).items()}
    for name in models:  # a name moves between plain and A/B serving
        data["ab"].pop(name, None)
    for name in ab:
        data["models"].pop(name, None)
    data["models"].update(models)
    data["ab"].update(ab)
    settings = ServeSettings.model_validate(data)
    return settings, [*models, *ab] or [*settings.models, *settings.ab]


class Reloader:
    def __init__(self, pool: ModelPool, metrics: ServeMetrics, on_commit: Callable[[], None] | None = None) -> None:
        self.pool, self.metrics, self.on_commit = pool, metrics, on_commit  # on_commit: the app re-documents names
        self.lock = asyncio.Lock()
        self.drains: set[asyncio.Task[None]] = set()

    async def reload(self, change: ReloadRequest) -> dict[str, Any]:
        if self.lock.locked():
            raise APIError(409, "a reload is already running; try again when it is done", code="reload_running")
        if any(m.status == "loading" for m in self.pool.models.values()):
            raise unavailable("the models are still loading; reload once /ready answers 200", retry_after_s=5)
        async with self.lock:
            try:
                settings, names = plan_reload(self.pool.settings, change)
            except ValidationError as exc:
                message, param = validation_message(exc.errors())
                raise APIError(400, message, param=param, code="invalid_request") from exc
            try:
                staged = await asyncio.to_thread(self.pool.stage, settings, names)
            except Exception as exc:
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed, the served models stay: %s", exc)
                raise APIError(500, f"reload failed, the served models stay: {exc}", code="reload_failed") from exc
            old = self.pool.commit(staged)  # no await between: the swap is atomic for every request
            if self.on_commit is not None:
                self.on_commit()
            for model in old:
                task = asyncio.create_task(asyncio.to_thread(self.pool.drain, model, settings.request_timeout_s))
                self.drains.add(task)
                task.add_done_callback(self.drains.discard)
            self.metrics.reloads.labels("ok").inc()
            log.info("reloaded %s; draining %d replaced model(s)", ", ".join(names), len(old))
            return {"reloaded": names, "models": [m.describe() for m in staged.models], "draining": len(old)}

    async def on_signal(self) -> None:
        """SIGHUP: reload everything; a failure is logged, the served models stay."""
        try:
            await self.reload(ReloadRequest())
        except APIError as exc:
            log.error("SIGHUP reload: %s", exc.message)


def build_rollout_router(pool: ModelPool, events: EventLog, metrics: ServeMetrics, reloader: Reloader,
                         admin: bool) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/feedback", status_code=201, response_model=FeedbackRecorded)
    async def feedback(body: Feedback, request: Request) -> FeedbackRecorded:
        """A score for a response of this server, counted for the variant that served it."""
        # Every field is bounded; this keeps a padded body out too (the server's own limit is max_body_bytes).
        if int(request.headers.get("content-length") or 0) > FEEDBACK_MAX_BYTES:
            raise APIError(413, f"a feedback body holds at most {FEEDBACK_MAX_BYTES} bytes", code="request_too_large")
        found = events.lookup(body.id)
        if found is None:
            raise APIError(404, f"no recent response has the id '{body.id}'; send a response's `id` (or its "
                                f"X-Request-Id) from this server, within its last {events.remember} responses",
                           param="id", code="unknown_response")
        rid, model, variant = found
        metrics.feedback.labels(model, variant).observe(body.score)
        events.write(EVENTS, {"event": "feedback", "request_id": rid, "model": model, "variant": variant,
                              "score": body.score, "comment": body.comment})
        return FeedbackRecorded(id=body.id, model=model, variant=variant)

    # An operator's route, not part of the API clients are generated from (README: "A/B rollout and reload").
    @router.post("/admin/reload", include_in_schema=False)
    async def reload(request: Request, change: ReloadRequest | None = Body(None)) -> dict[str, Any]:
        if not admin:
            raise APIError(403, "/admin/reload needs the server to have an API key (--api-key); "
                                "or send the server SIGHUP", code="admin_disabled")
        return await reloader.reload(change or ReloadRequest())

    return router
