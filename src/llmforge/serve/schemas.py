"""Request and response bodies: the OpenAI API as the official `openai` client uses it, plus the simple /chat.

Requests refuse every field this server does not implement, naming it, rather than silently doing something
else than asked (OpenAI answers 400 for an unknown field too). Types are strict: `"temperature": false` or
`"stream": "yes"` is a 400, never coerced. Strings holding a lone UTF-16 surrogate (`"\\ud800"`, which no
tokenizer can encode) are a 400 naming the field.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # a 64-bit integer, as vLLM takes it
MAX_TEXT = 32_000
BIAS_KEY = r"^[0-9]{1,9}$"
BIAS_SCHEMA = {"type": "object", "propertyNames": {"pattern": BIAS_KEY},
               "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}


def surrogate_path(value: Any, path: str = "") -> str | None:
    """Where `value` (parsed JSON) holds a string with a lone surrogate, as a dotted field path; None if nowhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for k, v in value.items():
            found = surrogate_path(v, f"{path}.{k}" if path else str(k)) or (
                surrogate_path(k, path or "body") if isinstance(k, str) else None)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = surrogate_path(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def _integral(value: Any) -> Any:
    """JSON has one number type: 20.0 is the integer 20 (JSON Schema agrees); 20.5, "20" and true are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _Strict(BaseModel):
    """Strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any) -> Any:
        # A field validator rather than an annotated type: that keeps each field's bounds in the JSON schema.
        return _integral(value)


class _Request(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        where = surrogate_path(data)
        if where:
            raise ValueError(f"{where}: the text holds a lone UTF-16 surrogate, which is not valid Unicode text")
        return data


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    """OpenAI's `response_format.json_schema`: the schema the reply must follow."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None  # accepted: every schema is enforced strictly here (constrained decoding)


class ResponseFormat(_Strict):
    model_config = ConfigDict(json_schema_extra={  # json_schema needs its schema
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}}})

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs 'json_schema'")
        return self

    def spec(self) -> dict[str, Any]:
        """As `llmforge.serve.guided` reads it."""
        out: dict[str, Any] = {"type": self.type}
        if self.json_schema is not None:
            out["json_schema"] = {"schema": self.json_schema.schema_}
        return out


class SamplingFields(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    n: int = Field(1, ge=1, le=16)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(None, description="Up to 4 stop strings.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Below 1e-5 (0 included): greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus mass; the most likely token always stays.")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX, description="A 64-bit integer; beyond: 400.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: Annotated[dict[Annotated[str, Field(pattern=BIAS_KEY)], Annotated[float, Field(ge=-100, le=100)]],
                          WithJsonSchema(BIAS_SCHEMA)] | None = Field(
        None, description="Token id (as a string) -> bias in [-100, 100] added to its logit.")
    ignore_eos: bool = Field(False, description="vLLM extension: generate exactly max_tokens (benchmarks).")
    top_k: int = Field(0, ge=-1, le=1_000_000, description="vLLM extension: keep the k most likely; 0 or -1: off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0,
                         description="vLLM extension: drop tokens below min_p x the top token's probability.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0,
                                      description="vLLM extension: > 1 discourages prompt and output tokens.")
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the reply is constrained to it (structured output).")
    guided_json: dict[str, Any] | Annotated[str, Field(max_length=MAX_TEXT)] | None = Field(
        None, description="vLLM extension: a JSON schema (object or its text) the reply is constrained to.")
    guided_regex: str | None = Field(None, max_length=4096,
                                     description="vLLM extension: a regular expression the reply must match.")
    guided_choice: Annotated[list[Annotated[str, Field(min_length=1, max_length=1024)]],
                             Field(min_length=1, max_length=256)] | None = Field(
        None, description="vLLM extension: the reply is exactly one of these strings.")
    user: str | None = None
    metadata: dict[str, str] | None = None  # OpenAI's bookkeeping fields: accepted, no effect on the result
    store: bool | None = None

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


class ContentPart(_Strict):
    type: Literal["text"]  # images, audio and files are refused (a text model)
    text: str | None = None


class FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object, shown to the model.")
    strict: bool | None = Field(None, description="Accepted; with tool_choice required or this function named, "
                                                "the arguments are constrained to `parameters` either way.")


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class CalledFunction(_Strict):
    name: str
    arguments: str = Field(description="JSON text, as the model's answer gave it.")
    # The openai client's parse/stream helpers add their own parse of the arguments to the message a program
    # sends back; it restates `arguments`, so it is accepted and not read.
    parsed_arguments: Any = Field(None, description="The openai client's own parse of `arguments`; not read.")


class MessageToolCall(_Strict):
    """A call an earlier assistant turn made (sent back by the client with the tool's result)."""

    id: str
    type: Literal["function"]
    function: CalledFunction
    index: int | None = Field(None, description="The openai client's stream helper keeps the stream's; not read.")


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = Field(None, description="On a `tool` message: the call it answers.")
    tool_calls: list[MessageToolCall] | None = Field(None, description="On an assistant message: its calls.")
    # What the openai client sends back when a program appends a reply message as it got it (its stream and
    # parse helpers fill these in): accepted, not read. The deprecated function_call and audio only as null.
    parsed: Any = Field(None, description="The openai client's parse/stream helpers' parsed output; not read.")
    refusal: str | None = Field(None, description="An earlier reply's refusal, as echoed back; not read.")
    annotations: list[dict[str, Any]] | None = Field(None, description="As echoed back; not read.")
    audio: None = Field(None, description="Only null: a text model.")
    function_call: None = Field(None, description="Only null: the deprecated functions API; send tool_calls.")

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {p.type for p in self.content} - {"text"}
        if kinds:
            raise ValueError(f"content parts of type {', '.join(sorted(kinds))} are not supported; send text")
        return "".join(p.text or "" for p in self.content)


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer"}}},  # needs logprobs
         "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}},
        {"if": {"required": ["tool_choice"],  # a call required (any, or a named one) needs tools to call
                "properties": {"tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]}}},
         "then": {"required": ["tools"], "properties": {"tools": {"type": "array"}}}}]})

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, min_length=1, max_length=128,
                                     description="Functions the model may call; the chat template shows them.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="auto (the default with tools): the reply is parsed for calls; none: never parsed. "
                          "required or a named function: decoding is constrained to one call (of that function), "
                          "its arguments following the function's parameters.")
    parallel_tool_calls: bool = Field(
        True, description="true: every call the reply holds is returned; false: only the first (as vLLM does). "
                          "tool_choice required or named constrains the reply to one call either way.")

    @model_validator(mode="after")
    def _logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if (self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)) and not self.tools:
            raise ValueError("tool_choice: a required or named tool call needs 'tools'")
        for m in self.messages:
            m.text()  # refuse non-text parts at validation time, as a 400
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class TokenizeCompletionRequest(_Request):
    """vLLM's /tokenize of a plain prompt."""

    model: str | None = None
    prompt: str = Field(max_length=MAX_TEXT * 4)
    add_special_tokens: bool = Field(True, description="Add the tokenizer's special tokens (bos), as /v1/completions.")
    return_token_strs: bool = Field(False, description="Also return each token's text.")


class TokenizeChatRequest(_Request):
    """vLLM's /tokenize of chat messages, rendered by the model's template exactly as a chat request's are."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = Field(True, description="End with the assistant's turn opening.")
    tools: list[Tool] | None = Field(None, min_length=1, max_length=128, description="As a chat request's.")
    return_token_strs: bool = Field(False, description="Also return each token's text.")

    @model_validator(mode="after")
    def _text_only(self) -> TokenizeChatRequest:
        for m in self.messages:
            m.text()
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: Annotated[list[Annotated[int, Field(ge=0), BeforeValidator(_integral)]], Field(max_length=1 << 17)]


class DetokenizeResponse(BaseModel):
    prompt: str


_Text = Annotated[str, Field(min_length=1)]
_Ids = Annotated[list[Annotated[int, Field(ge=0), BeforeValidator(_integral)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: _Text | Annotated[list[_Text], Field(min_length=1)] | _Ids | Annotated[list[_Ids], Field(min_length=1)] = Field(
        description="Text, texts, token ids or lists of token ids; never empty.")
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = Field(False, json_schema_extra={"const": False}, description="Not supported: only false.")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1: sample n choices instead.")

    @model_validator(mode="after")
    def _checks(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("'echo' is not supported by this server")
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


class FunctionCall(BaseModel):
    name: str
    arguments: str  # a JSON object as text


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None  # None when the reply is tool calls alone
    tool_calls: list[ToolCall] | None = None


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


class _Sparse(BaseModel):
    """Serialized without its unset (None) fields: a streamed tool call's later chunks carry only what is new."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class DeltaFunction(_Sparse):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Sparse):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


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


# --- the simple chat endpoints, /chat and /batch_chat: the API of the service llmforge grew from (not OpenAI's) ---


class SimpleChatFields(_Request):
    """The simple chat fields. `max_length` (or its OpenAI name `max_tokens`) counts generated tokens only."""

    max_tokens: int | None = Field(None, ge=1, description="Default 128.")
    max_length: int | None = Field(None, ge=1, description="This API's name of max_tokens.")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    model: str | None = None

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["max_tokens", "max_length"]}})

    @model_validator(mode="before")
    @classmethod
    def _max_length(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_length" in data and "max_tokens" in data:
            raise ValueError("give max_length or max_tokens, not both")
        return data

    @property
    def token_limit(self) -> int:
        return self.max_tokens or self.max_length or 128


class ChatRequest(SimpleChatFields):
    message: str = Field(min_length=1, max_length=MAX_TEXT)


class BatchChatRequest(SimpleChatFields):
    messages: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] = Field(min_length=1)


class ChatResponse(BaseModel):
    response: str
    model: str
    finish_reason: str
    usage: Usage
    latency_ms: float
    sources: list[dict[str, Any]] | None = Field(
        None, description="With `serve --rag`: the passages put into the prompt (id, source, start, end, score).")


class BatchChatResponse(BaseModel):
    responses: list[ChatResponse]
    model: str
    usage: Usage
    latency_ms: float
