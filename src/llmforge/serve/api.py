"""Generation routes: the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions) and vLLM's /tokenize and
/detokenize; `Generation` is what every generation route stands on (serve/simple.py's /chat and /batch_chat too).
A request's `seed` is always the sampling seed.

Each route: pick the model, build token ids, check the context, submit every sequence at once (so overload is
refused before anything starts), then stream or collect. A streamed choice and a non-streamed one are built
from the same engine outputs, so their text is identical (tool calls too: serve/tools.py parses both alike). Whatever way a response ends (done, client gone,
task cancelled), its sequences are cancelled and leave the batch at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from llmforge.rag import Hit, context_block, last_user_text, sources_header, with_passages
from llmforge.serve import schemas as s
from llmforge.serve.ab import sticky_key
from llmforge.serve.engine import (
    AsyncResults,
    Completion,
    ContextLengthError,
    EngineClosedError,
    GenerationRequest,
    QueueFullError,
)
from llmforge.serve.guided import Grammar, GrammarError, compile_grammar, compile_tool_grammar
from llmforge.serve.http_errors import APIError, error_body, overloaded, unavailable, validation_message
from llmforge.serve.pool import ModelPool, ServedModel
from llmforge.serve.prompts import PromptError, chat_ids, text_ids, token_text
from llmforge.serve.sampling import SamplingParams, TokenLogprob
from llmforge.serve.settings import ServeSettings
from llmforge.serve.tools import (
    StreamedChoice,
    chat_turns,
    message,
    model_tool_format,
    parses_calls,
    template_tools,
    unknown_choice,
)

FAILED = ("timeout", "abort", "error")
CLIENT_CLOSED = 499  # nginx's status for a client that left before the response
SOURCES_HEADER = "X-LLMforge-Sources"  # with --rag: the retrieved passages (JSON), streamed or not


class EngineStream(StreamingResponse):
    """Server-sent events whose sequences are cancelled however the response ends."""

    def __init__(self, events: AsyncIterator[str], results: AsyncResults) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.results = results

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.results.cancel()


def sse(payload: Any) -> str:
    data = payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {data}\n\n"


class Generation:
    def __init__(self, pool: ModelPool, shadow: Any = None, rag: Any = None) -> None:
        self.pool = pool
        self.shadow = shadow  # offer(name, requests, request id): a copy for the name's shadow model, if any
        self.rag = rag  # a loaded llmforge.rag.RagIndex (`--rag`), or None

    @property
    def settings(self) -> ServeSettings:
        return self.pool.settings  # a reload may change it

    # --- shared steps ---------------------------------------------------------------------------------------------

    def model(self, name: str, request: Request, user: str | None = None) -> ServedModel:
        """The model serving `name`: for an A/B-served name, the variant its session header or `user` picks."""
        model, variant = self.pool.route(name, sticky_key(request.headers.get(self.settings.session_header), user))
        if model is None:
            raise APIError(404, f"The model '{name}' does not exist; served: {', '.join(self.pool.names())}.",
                           param="model", code="model_not_found")
        request.state.model = name
        if variant:
            request.state.variant = variant
        if getattr(request.app.state, "draining", False):
            raise unavailable("the server is shutting down")
        if model.status == "loading":
            raise unavailable(f"model '{name}' is still loading", retry_after_s=5)
        if model.status == "failed":
            raise unavailable(f"model '{name}' failed to load: {model.error}", retry_after_s=30)
        return model

    def max_tokens(self, model: ServedModel, prompt: list[int], asked: int | None) -> int:
        """The completion budget: as asked, or (asked for nothing) the rest of the context, at least one token. Never
        cut silently: a budget the context cannot hold is refused where the context is checked, `Engine.submit`."""
        limit = model.engine.max_model_len  # type: ignore[union-attr]
        return asked if asked is not None else max(limit - len(prompt), 1)

    def submit(self, model: ServedModel, requests: list[GenerationRequest], param: str,
               request: Request | None = None) -> AsyncResults:
        """Queue all of `requests` or none; `param` is the field a context-length error names. Once queued, the
        results are kept on the request (the event log counts their tokens) and a copy goes to any shadow."""
        capacity = self.settings.max_concurrency + self.settings.max_queue
        if len(requests) > capacity:
            raise APIError(400, f"this request asks for {len(requests)} sequences; the server holds at most "
                                f"{capacity} at once", param="n", code="too_many_sequences")
        try:
            results = AsyncResults(model.engine, requests)  # type: ignore[arg-type]
        except ContextLengthError as exc:
            raise APIError(400, str(exc), param=param, code="context_length_exceeded") from exc
        except QueueFullError as exc:
            raise overloaded(str(exc)) from exc
        except EngineClosedError as exc:
            raise unavailable(str(exc)) from exc
        if request is not None:
            request.state.results = [*getattr(request.state, "results", []), results]
            if self.shadow is not None:
                self.shadow.offer(model.name, requests, request.state.request_id)
        return results

    def request(self, prompt: list[int], params: SamplingParams, rid: str) -> GenerationRequest:
        return GenerationRequest(prompt, params, rid, self.settings.request_timeout_s)

    def failure(self, c: Completion) -> APIError:
        if c.finish_reason == "timeout":
            return APIError(504, f"the request did not finish within {self.settings.request_timeout_s:g} s",
                            code="timeout")
        if c.finish_reason == "abort":
            return unavailable("the server is shutting down")
        return APIError(500, f"generation failed: {c.error}", code="generation_error")

    def stream_failure(self, reason: str, error: str | None) -> str:
        err = self.failure(Completion(finish_reason=reason, error=error))
        return sse(error_body(err.status, err.message, code=err.code))

    async def gather(self, request: Request, results: AsyncResults) -> list[Completion] | None:
        """All completions, or None when the client left first (its sequences are then cancelled)."""
        done = await self.gather_all(request, [results])
        return None if done is None else done[0]

    async def gather_all(self, request: Request, results: Sequence[AsyncResults]) -> list[list[Completion]] | None:
        collect = asyncio.ensure_future(asyncio.gather(*(r.collect() for r in results)))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
            return list(collect.result()) if collect.done() else None
        finally:
            gone.cancel()
            collect.cancel()
            for r in results:
                r.cancel()

    async def finished(self, request: Request, results: AsyncResults) -> list[Completion] | None:
        completions = await self.gather(request, results)
        for c in completions or []:
            if c.finish_reason in FAILED:
                raise self.failure(c)
        return completions

    # --- /v1/chat/completions -------------------------------------------------------------------------------------

    async def chat(self, body: s.ChatCompletionRequest, request: Request) -> Any:
        model = self.model(body.model, request, body.user)
        tokenizer = model.backend.tokenizer  # type: ignore[union-attr]
        bias = _logit_bias(body, tokenizer)
        unknown = unknown_choice(body)
        if unknown:
            raise APIError(400, f"tool_choice names '{unknown}', which is not among the tools", param="tool_choice",
                           code="unknown_tool")
        turns = chat_turns(body.messages)
        hits = await self.retrieve(turns)
        try:
            prompt = chat_ids(tokenizer, with_passages(turns, hits or []), model.name,
                              tools=template_tools(body.tools))
        except PromptError as exc:
            raise APIError(400, str(exc), param="messages") from exc
        fmt = model_tool_format(model.backend) if parses_calls(body) else None
        budget = self.max_tokens(model, prompt, body.token_limit)
        rid = request.state.request_id
        grammar = await _grammar(body, model)
        if fmt is not None and (body.tool_choice == "required" or isinstance(body.tool_choice, s.NamedToolChoice)):
            grammar = await _tool_grammar(body, model, fmt, grammar)
        requests = [self.request(prompt, _params(body, budget, body.top_alternatives, i, bias, grammar),
                                 f"{rid}-{i}") for i in range(body.n)]
        results = self.submit(model, requests, "messages", request)
        meta = {"id": f"chatcmpl-{rid}", "model": model.name, "created": int(time.time())}
        if body.stream:
            stream = EngineStream(self._chat_events(results, meta, body, tokenizer, len(prompt), fmt), results)
            if hits is not None:
                stream.headers[SOURCES_HEADER] = sources_header(hits)
            return stream
        done = await self.finished(request, results)
        if done is None:
            return Response(status_code=CLIENT_CLOSED)
        choices = []
        for i, c in enumerate(done):
            reply, called = message(c.text, fmt, _max_calls(body))
            choices.append(s.ChatChoice(
                index=i, message=reply, finish_reason="tool_calls" if called else c.finish_reason,
                logprobs=_chat_logprobs(tokenizer, c.logprobs) if body.logprobs else None))
        reply = s.ChatCompletion(**meta, choices=choices, usage=usage(len(prompt), done))
        if hits is None:
            return reply
        # An extra top-level field: OpenAI clients ignore it (the openai client keeps it in `model_extra`).
        return JSONResponse({**jsonable_encoder(reply), "sources": [h.ref() for h in hits]},
                            headers={SOURCES_HEADER: sources_header(hits)})

    async def retrieve(self, turns: list[dict[str, Any]]) -> list[Hit] | None:
        """With `--rag`: the passages nearest the last user message (off the event loop: it runs the encoder)."""
        if self.rag is None:
            return None
        return await asyncio.to_thread(self.rag.search, last_user_text(turns), self.settings.rag_top_k)

    async def _chat_events(self, results: AsyncResults, meta: dict[str, Any], body: s.ChatCompletionRequest,
                           tokenizer: Any, prompt_tokens: int, fmt: str | None = None) -> AsyncIterator[str]:
        """With `fmt`, each choice's text goes through its own tool-call parser: content is released as it
        comes, a call once it is complete (the same parse as a non-streamed reply's)."""
        def chunk(choices: list[s.ChunkChoice], usage: s.Usage | None = None) -> str:
            return sse(s.ChatCompletionChunk(**meta, choices=choices, usage=usage))

        choices = [StreamedChoice(fmt, _max_calls(body)) for _ in range(body.n)]
        for i in range(body.n):
            yield chunk([s.ChunkChoice(index=i, delta=s.Delta(role="assistant", content=""))])
        generated = 0
        async for out in results:
            if out.finish_reason in FAILED:
                yield self.stream_failure(out.finish_reason, out.error)  # type: ignore[arg-type]
                break
            logprobs = _chat_logprobs(tokenizer, list(out.logprobs)) if body.logprobs and out.logprobs else None
            text, calls = choices[out.index].step(out.text, last=bool(out.finish_reason))
            if text or logprobs:
                yield chunk([s.ChunkChoice(index=out.index, delta=s.Delta(content=text), logprobs=logprobs)])
            for call in calls:
                yield chunk([s.ChunkChoice(index=out.index, delta=s.Delta(tool_calls=[call]))])
            if out.finish_reason:
                generated += out.completion_tokens
                reason = "tool_calls" if choices[out.index].calls else out.finish_reason
                yield chunk([s.ChunkChoice(index=out.index, delta=s.Delta(), finish_reason=reason)])
        else:
            if body.include_usage:
                yield chunk([], s.Usage(prompt_tokens=prompt_tokens, completion_tokens=generated,
                                        total_tokens=prompt_tokens + generated))
        yield "data: [DONE]\n\n"

    # --- /tokenize and /detokenize (vLLM's): what a prompt becomes, token by token ---------------------------------

    def tokenize(self, body: s.TokenizeCompletionRequest | s.TokenizeChatRequest,
                 request: Request) -> s.TokenizeResponse:
        model = self.model(body.model or self.settings.default_model, request)
        tokenizer = model.backend.tokenizer  # type: ignore[union-attr]
        if isinstance(body, s.TokenizeChatRequest):
            try:
                ids = chat_ids(tokenizer, chat_turns(body.messages), model.name, body.add_generation_prompt,
                               template_tools(body.tools))
            except PromptError as exc:
                raise APIError(400, str(exc), param="messages") from exc
        else:
            ids = list(tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"])
        strs = [token_text(tokenizer, i) for i in ids] if body.return_token_strs else None
        return s.TokenizeResponse(count=len(ids), max_model_len=model.engine.max_model_len,  # type: ignore[union-attr]
                                  tokens=ids, token_strs=strs)

    def detokenize(self, body: s.DetokenizeRequest, request: Request) -> s.DetokenizeResponse:
        model = self.model(body.model or self.settings.default_model, request)
        tokenizer = model.backend.tokenizer  # type: ignore[union-attr]
        vocab = len(tokenizer)
        if any(t >= vocab for t in body.tokens):
            raise APIError(400, f"token ids must lie in [0, {vocab})", param="tokens", code="invalid_token")
        return s.DetokenizeResponse(prompt=tokenizer.decode(body.tokens, skip_special_tokens=False))

    # --- /v1/completions ----------------------------------------------------------------------------------------------

    def _prompts(self, body: s.CompletionRequest, tokenizer: Any) -> list[list[int]]:
        p = body.prompt
        if isinstance(p, str):
            prompts = [text_ids(tokenizer, p)]
        elif all(isinstance(x, str) for x in p):
            prompts = [text_ids(tokenizer, x) for x in p]  # type: ignore[arg-type]
        elif all(isinstance(x, int) for x in p):
            prompts = [list(p)]  # type: ignore[arg-type]
        else:
            prompts = [list(x) for x in p]  # type: ignore[union-attr]
        vocab = len(tokenizer)
        if any(not ids or min(ids) < 0 or max(ids) >= vocab for ids in prompts):
            raise APIError(400, f"every prompt needs at least one token, and token ids must lie in [0, {vocab})",
                           param="prompt", code="invalid_token")
        return prompts

    async def completions(self, body: s.CompletionRequest, request: Request) -> Any:
        model = self.model(body.model, request, body.user)
        tokenizer = model.backend.tokenizer  # type: ignore[union-attr]
        prompts = self._prompts(body, tokenizer)
        bias = _logit_bias(body, tokenizer)
        budgets = [self.max_tokens(model, p, body.token_limit) for p in prompts]
        rid = request.state.request_id
        grammar = await _grammar(body, model)
        requests = [self.request(p, _params(body, b, body.top_alternatives, i, bias, grammar),
                                 f"{rid}-{k * body.n + i}")
                    for k, (p, b) in enumerate(zip(prompts, budgets)) for i in range(body.n)]
        results = self.submit(model, requests, "prompt", request)
        meta = {"id": f"cmpl-{rid}", "model": model.name, "created": int(time.time())}
        prompt_tokens = sum(len(p) for p in prompts)
        if body.stream:
            return EngineStream(self._completion_events(results, meta, body, tokenizer, prompt_tokens), results)
        done = await self.finished(request, results)
        if done is None:
            return Response(status_code=CLIENT_CLOSED)
        choices = [s.CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason,
                                      logprobs=_completion_logprobs(tokenizer, c.logprobs, 0)
                                      if body.logprobs is not None else None)
                   for i, c in enumerate(done)]
        return s.Completion(**meta, choices=choices, usage=usage(prompt_tokens, done))

    async def _completion_events(self, results: AsyncResults, meta: dict[str, Any], body: s.CompletionRequest,
                                 tokenizer: Any, prompt_tokens: int) -> AsyncIterator[str]:
        offsets: dict[int, int] = {}
        generated = 0
        async for out in results:
            if out.finish_reason in FAILED:
                yield self.stream_failure(out.finish_reason, out.error)  # type: ignore[arg-type]
                break
            logprobs = None
            if body.logprobs is not None and out.logprobs:
                logprobs = _completion_logprobs(tokenizer, list(out.logprobs), offsets.get(out.index, 0))
                offsets[out.index] = logprobs.text_offset[-1] + len(logprobs.tokens[-1])
            if out.finish_reason:
                generated += out.completion_tokens
            if out.text or logprobs or out.finish_reason:
                choice = s.CompletionChoice(index=out.index, text=out.text, logprobs=logprobs,
                                            finish_reason=out.finish_reason)
                yield sse(s.Completion(**meta, choices=[choice]))
        else:
            if body.include_usage:
                usage = s.Usage(prompt_tokens=prompt_tokens, completion_tokens=generated,
                                total_tokens=prompt_tokens + generated)
                yield sse(s.Completion(**meta, choices=[], usage=usage))
        yield "data: [DONE]\n\n"


def _max_calls(body: s.ChatCompletionRequest) -> int | None:
    return None if body.parallel_tool_calls else 1


def passages_text(hits: list[Hit] | None) -> str | None:
    """The passages as the system text `with_passages` writes (None: no --rag, or nothing retrieved)."""
    return context_block(hits) if hits else None


def source_refs(hits: list[Hit] | None) -> list[dict[str, Any]] | None:
    return None if hits is None else [h.ref() for h in hits]


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _logit_bias(body: s.SamplingFields, tokenizer: Any) -> tuple[tuple[int, float], ...]:
    vocab = len(tokenizer)
    bias = tuple((int(k), float(v)) for k, v in (body.logit_bias or {}).items())
    bad = [i for i, _ in bias if i >= vocab]
    if bad:
        raise APIError(400, f"logit_bias: token id {bad[0]} is not in the vocabulary [0, {vocab})",
                       param="logit_bias", code="invalid_token")
    return bias


async def _grammar(body: s.SamplingFields, model: ServedModel) -> Grammar | None:
    """The structured output a request asks for, compiled for the model's tokenizer (off the event loop: the
    first grammar for a tokenizer builds its token trie); a 400 naming the field when it cannot be compiled."""
    asked = {"response_format": body.response_format.spec() if body.response_format else None,
             "guided_json": body.guided_json, "guided_regex": body.guided_regex, "guided_choice": body.guided_choice}
    if all(v is None for v in asked.values()):
        return None
    backend = model.backend
    try:
        return await asyncio.to_thread(compile_grammar, backend.tokenizer,  # type: ignore[union-attr]
                                       frozenset(backend.eos_token_ids), **asked)  # type: ignore[union-attr]
    except GrammarError as exc:
        field = next(k for k, v in asked.items() if v is not None)
        raise APIError(400, str(exc), param=field, code="invalid_grammar") from exc


async def _tool_grammar(body: s.ChatCompletionRequest, model: ServedModel, fmt: str,
                        asked: Grammar | None) -> Grammar:
    """`tool_choice: required` (any of the tools) or a named function: the reply is constrained to one call in the
    model's tool format, its arguments following the function's parameters."""
    if asked is not None:
        raise APIError(400, "a required tool call and a response format cannot both constrain the reply",
                       param="tool_choice", code="conflicting_constraints")
    choice = body.tool_choice
    tools = [t.function for t in body.tools or []
             if not isinstance(choice, s.NamedToolChoice) or t.function.name == choice.function.name]
    backend = model.backend
    try:
        return await asyncio.to_thread(compile_tool_grammar, backend.tokenizer,  # type: ignore[union-attr]
                                       frozenset(backend.eos_token_ids),  # type: ignore[union-attr]
                                       [(f.name, f.parameters) for f in tools], fmt)
    except GrammarError as exc:
        raise APIError(400, str(exc), param="tools", code="invalid_grammar") from exc


def _params(body: s.SamplingFields, max_tokens: int, logprobs: int | None, choice: int,
            bias: tuple[tuple[int, float], ...] = (), grammar: Grammar | None = None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
        # Each of n choices gets its own seed, so they differ from each other yet repeat with the same request
        # (the sampler reduces seed + choice modulo 2**64).
        seed=None if body.seed is None else body.seed + choice,
        stop=tuple(body.stop or ()), presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, logprobs=logprobs, ignore_eos=body.ignore_eos,
        top_k=max(body.top_k, 0), min_p=body.min_p, repetition_penalty=body.repetition_penalty, logit_bias=bias,
        grammar=grammar,
    )


def usage(prompt_tokens: int, done: Sequence[Completion]) -> s.Usage:
    generated = sum(c.completion_tokens for c in done)
    return s.Usage(prompt_tokens=prompt_tokens, completion_tokens=generated, total_tokens=prompt_tokens + generated)


def _entry(tokenizer: Any, token_id: int, logprob: float) -> s.TopLogprob:
    text = token_text(tokenizer, token_id)
    return s.TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))


def _chat_logprobs(tokenizer: Any, logprobs: Sequence[TokenLogprob]) -> s.ChatLogprobs:
    content = [s.ChatLogprob(**_entry(tokenizer, lp.token_id, lp.logprob).model_dump(),
                             top_logprobs=[_entry(tokenizer, i, v) for i, v in lp.top]) for lp in logprobs]
    return s.ChatLogprobs(content=content)


def _completion_logprobs(tokenizer: Any, logprobs: Sequence[TokenLogprob], offset: int) -> s.CompletionLogprobs:
    tokens = [token_text(tokenizer, lp.token_id) for lp in logprobs]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    top = [{token_text(tokenizer, i): v for i, v in lp.top} for lp in logprobs]
    return s.CompletionLogprobs(tokens=tokens, token_logprobs=[lp.logprob for lp in logprobs],
                                top_logprobs=top, text_offset=offsets)


def _streamed(model: type) -> dict[int | str, dict[str, Any]]:
    """A generation's 200: its JSON body, or with `stream: true` server-sent events ending in `data: [DONE]`."""
    event = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
    return {200: {"model": model, "content": {"text/event-stream": {"schema": event}}}}


def _tokenize_request(raw: Any) -> s.TokenizeCompletionRequest | s.TokenizeChatRequest:
    """vLLM's two /tokenize bodies, told apart by their input field so that an error names the right one."""
    if not isinstance(raw, dict) or ("prompt" in raw) == ("messages" in raw):
        raise APIError(400, "the body must be a JSON object with either 'prompt' (text) or 'messages' (a chat)",
                       code="invalid_request")
    model = s.TokenizeChatRequest if "messages" in raw else s.TokenizeCompletionRequest
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise APIError(400, message, param=param, code="invalid_request") from exc


def _tokenize_body() -> dict[str, Any]:
    schemas = [m.model_json_schema(ref_template="#/components/schemas/{model}")
               for m in (s.TokenizeCompletionRequest, s.TokenizeChatRequest)]
    for schema in schemas:
        schema.pop("$defs", None)  # ChatMessage and ContentPart are components already (the chat request's)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": schemas}}}}}


def build_router(gen: Generation) -> APIRouter:
    """The OpenAI routes and /tokenize, /detokenize over `gen` (serve/simple.py adds /chat and /batch_chat)."""
    pool = gen.pool
    router = APIRouter()

    @router.get("/v1/models", response_model=s.ModelList)
    async def models() -> s.ModelList:
        return s.ModelList(data=[
            s.ModelCard(id=m.name, created=m.created, root=m.ref,
                        max_model_len=m.engine.max_model_len if m.engine else None)
            for m in pool.public()
        ])

    @router.post("/v1/chat/completions", responses=_streamed(s.ChatCompletion))
    async def chat_completions(body: s.ChatCompletionRequest, request: Request) -> Any:
        return await gen.chat(body, request)

    @router.post("/v1/completions", responses=_streamed(s.Completion))
    async def completions(body: s.CompletionRequest, request: Request) -> Any:
        return await gen.completions(body, request)

    @router.post("/tokenize", response_model=s.TokenizeResponse, openapi_extra=_tokenize_body())
    async def tokenize(request: Request, raw: Any = Body(None, include_in_schema=False)) -> s.TokenizeResponse:
        return gen.tokenize(_tokenize_request(raw), request)

    @router.post("/detokenize", response_model=s.DetokenizeResponse)
    async def detokenize(body: s.DetokenizeRequest, request: Request) -> s.DetokenizeResponse:
        return gen.detokenize(body, request)

    return router
