"""The simple chat API: /chat (one message) and /batch_chat (messages with shared settings, or a list of /chat
requests each with its own), the endpoints of the service llmforge grew from, kept for its clients. They stand on
the same `Generation` as the OpenAI routes: the same models, limits, queue, metrics and, with --rag, retrieval.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import ValidationError

from llmforge.rag import Hit
from llmforge.serve import schemas as s
from llmforge.serve.api import CLIENT_CLOSED, FAILED, Generation, passages_text, source_refs, usage
from llmforge.serve.engine import AsyncResults
from llmforge.serve.http_errors import APIError, error_body, validation_message
from llmforge.serve.prompts import PromptError, message_ids
from llmforge.serve.sampling import SamplingParams


def build_simple_router(gen: Generation) -> APIRouter:
    settings = gen.settings
    router = APIRouter()

    @router.post("/chat", response_model=s.ChatResponse)
    async def chat(body: s.ChatRequest, request: Request) -> Any:
        answers = await simple_chat(gen, [body.message], body, request)
        return answers[0] if answers else Response(status_code=CLIENT_CLOSED)

    @router.post("/batch_chat", response_model=s.BatchChatResponse | list[s.ChatResponse | s.ErrorBody],
                 openapi_extra=_batch_chat_body(settings.max_batch_chat))
    async def batch_chat(request: Request, raw: Any = Body(None, include_in_schema=False)) -> Any:
        if isinstance(raw, list):  # the simple shape: a bare list of /chat requests, each with its own settings
            if not 1 <= len(raw) <= settings.max_batch_chat:
                raise APIError(400, f"a batch holds 1 to {settings.max_batch_chat} requests; got {len(raw)}",
                               param=None)
            slots = await simple_batch(gen, raw, request)
            return slots if slots is not None else Response(status_code=CLIENT_CLOSED)
        if not isinstance(raw, dict):
            raise APIError(400, "the body must be a JSON object with 'messages', or a JSON list of /chat requests")
        try:
            body = s.BatchChatRequest.model_validate(raw)
        except ValidationError as exc:
            message, param = validation_message(exc.errors())
            raise APIError(400, message, param=param, code="invalid_request") from exc
        if len(body.messages) > settings.max_batch_chat:
            raise APIError(400, f"at most {settings.max_batch_chat} messages per batch; got {len(body.messages)}",
                           param="messages")
        start = time.perf_counter()
        answers = await simple_chat(gen, body.messages, body, request)
        if not answers:
            return Response(status_code=CLIENT_CLOSED)
        total = s.Usage(**{k: sum(getattr(a.usage, k) for a in answers)
                           for k in ("prompt_tokens", "completion_tokens", "total_tokens")})
        return s.BatchChatResponse(responses=answers, model=answers[0].model, usage=total,
                                   latency_ms=round(1e3 * (time.perf_counter() - start), 2))

    return router


async def simple_chat(gen: Generation, messages: Sequence[str], body: s.SimpleChatFields,
                      request: Request) -> list[s.ChatResponse]:
    start = time.perf_counter()
    model = gen.model(body.model or gen.settings.default_model, request)
    tokenizer = model.backend.tokenizer  # type: ignore[union-attr]
    hits = [await gen.retrieve([{"role": "user", "content": m}]) for m in messages]
    try:
        prompts = [message_ids(tokenizer, m, model.name, passages_text(h)) for m, h in zip(messages, hits)]
    except PromptError as exc:
        raise APIError(400, str(exc), param="message") from exc
    params = SamplingParams(max_tokens=body.token_limit, temperature=body.temperature, top_p=body.top_p)
    rid = request.state.request_id
    results = gen.submit(model, [gen.request(p, params, f"{rid}-{i}") for i, p in enumerate(prompts)],
                         "message", request)
    done = await gen.finished(request, results)
    if done is None:
        return []
    latency = round(1e3 * (time.perf_counter() - start), 2)
    return [s.ChatResponse(response=c.text, model=model.name, finish_reason=c.finish_reason or "stop",
                           usage=usage(len(p), [c]), latency_ms=latency, sources=source_refs(h))
            for p, c, h in zip(prompts, done, hits)]


async def simple_batch(gen: Generation, items: list[Any], request: Request) -> list[Any] | None:
    """The simple bare list of /chat requests: each answered with its own settings, in its own slot.

    An item that is invalid (or too long, or for an unknown model) holds an OpenAI error body; the others are
    answered. None when the client left first."""
    start = time.perf_counter()
    slots: list[Any] = [None] * len(items)
    # (slot, prompt tokens, model, passages, results)
    running: list[tuple[int, int, str, list[Hit] | None, AsyncResults]] = []
    rid = request.state.request_id
    try:
        for i, item in enumerate(items):
            try:
                running.append((i, *await _simple_item(gen, item, request, f"{rid}-{i}")))
            except APIError as exc:
                slots[i] = error_body(exc.status, exc.message, exc.param, exc.code)
        done = await gen.gather_all(request, [r for *_, r in running])
    finally:
        for *_, r in running:
            r.cancel()
    if done is None:
        return None
    latency = round(1e3 * (time.perf_counter() - start), 2)
    for (i, prompt_tokens, name, hits, _), (c,) in zip(running, done):
        if c.finish_reason in FAILED:
            err = gen.failure(c)
            slots[i] = error_body(err.status, err.message, err.param, err.code)
        else:
            slots[i] = s.ChatResponse(response=c.text, model=name, finish_reason=c.finish_reason or "stop",
                                      usage=usage(prompt_tokens, [c]), latency_ms=latency, sources=source_refs(hits))
    return slots


async def _simple_item(gen: Generation, item: Any, request: Request,
                       rid: str) -> tuple[int, str, list[Hit] | None, AsyncResults]:
    try:
        body = s.ChatRequest.model_validate(item)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise APIError(400, message, param=param, code="invalid_request") from exc
    model = gen.model(body.model or gen.settings.default_model, request)
    hits = await gen.retrieve([{"role": "user", "content": body.message}])
    try:
        prompt = message_ids(model.backend.tokenizer, body.message, model.name,  # type: ignore[union-attr]
                             passages_text(hits))
    except PromptError as exc:
        raise APIError(400, str(exc), param="message") from exc
    params = SamplingParams(max_tokens=body.token_limit, temperature=body.temperature, top_p=body.top_p)
    results = gen.submit(model, [gen.request(prompt, params, rid)], "message", request)
    return len(prompt), model.name, hits, results


def _batch_chat_body(max_items: int) -> dict[str, Any]:
    """/batch_chat's body as OpenAPI: the simple bare list of /chat requests, or an object with `messages`."""
    listed = {"type": "array", "minItems": 1, "maxItems": max_items, "items": s.ChatRequest.model_json_schema()}
    obj = s.BatchChatRequest.model_json_schema()
    obj["properties"]["messages"]["maxItems"] = max_items
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [listed, obj]}}}}}
