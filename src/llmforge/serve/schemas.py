"""Request and response bodies: the OpenAI API as the official `openai` client uses it, plus the seed's /chat.

Requests ignore unknown fields (clients send many harmless ones) but refuse the known ones this server does
not implement, naming the field, rather than silently doing something else than asked.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Fields of the OpenAI API that change the result and are not implemented here: refused, never ignored.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "response_format", "logit_bias", "suffix",
               "audio", "modalities", "prediction", "web_search_options")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in UNSUPPORTED:
                if data.get(key) not in (None, [], {}):
                    raise ValueError(f"'{key}' is not supported by this server")
        return data


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(False, description="vLLM extension: generate exactly max_tokens (benchmarks).")
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {p.type for p in self.content} - {"text"}
        if kinds:
            raise ValueError(f"content parts of type {', '.join(sorted(kinds))} are not supported; send text")
        return "".join(p.text or "" for p in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        for m in self.messages:
            m.text()  # refuse non-text parts at validation time, as a 400
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("'echo' is not supported by this server")
        if self.best_of not in (None, self.n):
            raise ValueError("'best_of' other than n is not supported by this server")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self

    @property
    def token_limit(self) -> int:
        return self.max_tokens or 16  # OpenAI's default for completions

    @property
    def top_alternatives(self) -> int | None:
        return self.logprobs


# --- responses ---------------------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatLogprob] | None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmforge"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- the seed's endpoints ------------------------------------------------------------------------------------------


class SeedFields(_Request):
    """The seed's fields. `max_length` (or its OpenAI name `max_tokens`) counts generated tokens only."""

    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    model: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _max_length(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_length" in data:
            if "max_tokens" in data:
                raise ValueError("give max_length or max_tokens, not both")
            data = {**data, "max_tokens": data["max_length"]}
        return data


class ChatRequest(SeedFields):
    message: str = Field(min_length=1, max_length=32_000)


class BatchChatRequest(SeedFields):
    messages: list[str] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(not m for m in v) or any(len(m) > 32_000 for m in v):
            raise ValueError("each message must hold 1 to 32000 characters")
        return v


class ChatResponse(BaseModel):
    response: str
    model: str
    finish_reason: str
    usage: Usage
    latency_ms: float


class BatchChatResponse(BaseModel):
    responses: list[ChatResponse]
    model: str
    usage: Usage
    latency_ms: float
