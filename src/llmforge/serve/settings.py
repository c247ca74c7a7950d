"""The server's typed settings: one model, its field docs are the `--help` text of `llmforge serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmforge.errors import ConfigError
from llmforge.models.chat import template_text
from llmforge.serve.ab import Rollout
from llmforge.serve.backends import BACKENDS


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(
        default_factory=lambda: {"demo": "demo"},
        description="Served model name -> model reference (hub id, model dir, llmforge run dir incl. LoRA adapter "
                    "runs, ONNX export dir, or 'demo'). Requests pick one by their `model` field; the first is the "
                    "default of /chat and /batch_chat (vLLM: --served-model-name).",
    )
    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 to listen on every interface.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer keys accepted on every route but liveness (/, /health); empty: no auth (vLLM: --api-key).",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty (the default) allows none."
    )
    public_paths: list[str] = Field(
        default_factory=lambda: ["/", "/health"],
        description="Paths served without an API key. Liveness only by default; add /ready or /metrics for probes.",
    )
    backend: Literal["auto", "transformers", "onnx", "llamacpp", "vllm"] = Field(
        "auto", description="Runtime; 'auto' follows what each artifact's manifest says it is."
    )
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bf16 on a GPU that supports it and on a CPU with AMX-BF16 or avx512_bf16 "
        "(measured faster there, replies unchanged), else fp32; `llmforge doctor` shows what it picks here."
    )
    threads: int | None = Field(
        None, ge=1,
        description="CPU threads of every backend (PyTorch, ONNX Runtime, llama.cpp); default: the cores this "
        "process may use (on 2 cores, 2 threads served 1.8x the tokens/s of 1).",
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Context length served (prompt + completion); default: the model's own."
    )
    max_concurrency: int = Field(16, ge=1, description="Requests decoding together per model (batch rows).")
    max_queue: int = Field(64, ge=0, description="Requests waiting for a slot per model; beyond it: 429.")
    max_prefill_tokens: int = Field(8192, ge=1, description="Padded prompt tokens prefilled in one engine step.")
    max_batch_chat: int = Field(8, ge=1, description="Most messages in one /batch_chat request.")
    request_timeout_s: float = Field(300.0, gt=0, description="Longest a request may take, queue time included.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted; beyond it: 413.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM: stop accepting, let in-flight requests finish for this long."
    )
    chat_template: str | None = Field(
        None, description="Chat template for every model instead of its tokenizer's own: a name (chatml, llama-3, "
        "llama-2, mistral, gemma, phi-3, user-assistant, dialogpt) or a Jinja file (vLLM: --chat-template)."
    )
    warmup: bool = Field(True, description="Run one short generation per model before /ready says ready.")
    ab: dict[str, Rollout] = Field(
        default_factory=dict,
        description="A/B-served name -> {variants: {NAME: {model: REF, weight: W}, ...}, shadow: REF}. A request for "
                    "the name is served by one variant, sticky by `session_header` or the `user` field, else at "
                    "random by weight; the X-LLMforge-Variant response header says which.",
    )
    session_header: str = Field(
        "X-LLMforge-Session", min_length=1,
        description="Request header whose value keeps a client on one A/B variant (before the `user` field).",
    )
    event_log: Path | None = Field(
        None, description="Directory for JSONL logs: events.jsonl (each generation request: variant, status, "
                          "latency, tokens; each feedback) and shadow.jsonl (shadow answers); read by "
                          "`llmforge ab report`. None: no logs (feedback is still counted in /metrics).",
    )
    shadow_queue: int = Field(64, ge=1, description="Requests waiting for a shadow model; beyond it they are "
                                                    "dropped (counted), never delaying the served answer.")
    ui: bool = Field(
        False, description="Serve the web playground at /ui (chat, compare, runs, registry and A/B), through this "
                           "server's own API and behind the same keys.",
    )
    ui_runs: list[Path] = Field(
        default_factory=lambda: [Path("runs")],
        description="Directories the playground's Runs page lists run directories from (3 levels deep).",
    )
    rag: Path | None = Field(
        None, description="A `llmforge rag index` directory: each chat completion retrieves the passages nearest its "
                          "last user message and gets them in a system message; the reply names them in `sources` "
                          "and the X-LLMforge-Sources header (streamed: the header only). None: no retrieval.",
    )
    rag_top_k: int = Field(4, ge=1, le=50, description="Passages retrieved per chat completion with `rag`.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("models")
    @classmethod
    def _some_model(cls, v: dict[str, str]) -> dict[str, str]:
        for name, ref in v.items():
            if not name or not ref:
                raise ValueError("model names and references must not be empty")
        return v

    @model_validator(mode="after")
    def _names(self) -> ServeSettings:
        if not self.models and not self.ab:
            raise ValueError("serve at least one model: give `models` or `ab`")
        both = sorted(set(self.models) & set(self.ab))
        if both:
            raise ValueError(f"'{both[0]}' is both in `models` and in `ab`; a served name is one or the other")
        return self

    @field_validator("backend")
    @classmethod
    def _known(cls, v: str) -> str:
        if v != "auto" and v not in BACKENDS:
            raise ValueError(f"unknown backend '{v}'; allowed: auto, {', '.join(BACKENDS)}")
        return v

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            template_text(v)  # a name or a readable file, checked before any model loads
        return v

    @property
    def default_model(self) -> str:
        return next(iter([*self.models, *self.ab]))

    @classmethod
    def for_models(cls, refs: list[str], names: list[str] | None = None, **fields: object) -> ServeSettings:
        """vLLM's convention: each model is served under its reference unless `--served-model-name` names it."""
        names = names or []
        if not refs and not fields.get("ab"):
            raise ConfigError("nothing to serve: give one or more models, or --ab NAME=VARIANT:WEIGHT:REF,...")
        if len(names) > len(refs):
            raise ValueError(f"{len(names)} served model names for {len(refs)} models")
        served = {(names[i] if i < len(names) else ref): ref for i, ref in enumerate(refs)}
        if len(served) < len(refs):
            raise ValueError("two models would be served under the same name; give --served-model-name for each")
        return cls(models=served, **fields)  # type: ignore[arg-type]
